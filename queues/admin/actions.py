"""Staff actions on jobs (retry, cancel, re-enqueue a copy, delete from Redis), single and bulk.

Each action is confirmed on its own page (with an optional reason), calls one service per job and
is written twice: to Django's admin log (one entry per job) and to the audit trail (one event per
action, naming every job). Permission checks live in the ModelAdmin; this module only adapts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from queues import services, signals
from queues.models import JobRecord
from slimy_site.exceptions import ApplicationError

logger = logging.getLogger("queues.admin")

# A bulk action touches at most this many jobs per confirmation; filter further for more.
MAX_BULK_JOBS = 1000
PREVIEW_JOBS = 50


class ReasonForm(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Optional; written to the admin log and the audit trail.",
    )


@dataclass(frozen=True)
class JobAction:
    name: str  # also the admin action's name and the audit action's suffix
    verb: str  # "Retry"
    past: str  # "retried"
    permission: str  # ModelAdmin.has_<permission>_permission
    service: Callable
    explanation: str
    admin_name: str  # the changelist action (JobRecordAdmin method) that runs it in bulk

    @property
    def label(self) -> str:
        return {"requeue_copy": "Re-enqueue a copy", "delete_from_redis": "Delete from Redis"}.get(self.name, self.verb)


ACTIONS: dict[str, JobAction] = {
    a.name: a
    for a in (
        JobAction(
            "retry",
            "Retry",
            "retried",
            "retry",
            services.job_retry,
            "Failed or cancelled jobs are queued again with a fresh attempt budget. Others are skipped.",
            "retry_jobs",
        ),
        JobAction(
            "cancel",
            "Cancel",
            "cancelled",
            "cancel",
            services.job_cancel,
            "Waiting jobs are removed from their queue; running ones are asked to stop. Finished jobs are skipped.",
            "cancel_jobs",
        ),
        JobAction(
            "requeue_copy",
            "Re-enqueue a copy of",
            "copied",
            "retry",
            services.job_requeue_copy,
            "A new job with the same type, payload, owner and priority is created for each; "
            "the originals are left unchanged.",
            "requeue_copies",
        ),
        JobAction(
            "delete_from_redis",
            "Delete from Redis and mark cancelled",
            "deleted from Redis",
            "cancel",
            services.job_delete_from_redis,
            "Every trace of the job is removed from Redis (queue, registries, result); "
            "jobs that had not finished are marked cancelled.",
            "delete_from_redis",
        ),
    )
}


@dataclass
class ActionOutcome:
    done: list[JobRecord]
    skipped: dict[str, str]
    copies: dict[str, str]


def job_action_perform(modeladmin, request, action: JobAction, jobs: list[JobRecord], reason: str) -> ActionOutcome:
    outcome = ActionOutcome(done=[], skipped={}, copies={})
    for job in jobs:
        try:
            result = action.service(job=job, actor=request.user)
        except ApplicationError as exc:
            outcome.skipped[str(job.pk)] = exc.message
            continue
        outcome.done.append(job)
        message = f"{action.verb} via admin."
        if action.name == "requeue_copy":
            outcome.copies[str(job.pk)] = str(result.pk)
            message = f"Re-enqueued as a copy: job {result.pk}."
        if reason:
            message += f" Reason: {reason}"
        modeladmin.log_change(request, job, message)
    _audit(request, action, outcome, reason)
    return outcome


def audit_record(request, **event) -> None:
    """Announce a staff action; the audit app (a receiver of operator_action) writes it to the trail."""
    signals.operator_action.send(sender=None, request=request, **event)


def _audit(request, action: JobAction, outcome: ActionOutcome, reason: str) -> None:
    job_ids = [str(job.pk) for job in outcome.done]
    details = {"reason": reason, "jobs": job_ids, "skipped": outcome.skipped}
    if outcome.copies:
        details["copies"] = outcome.copies
    single = len(job_ids) + len(outcome.skipped) == 1
    audit_record(
        request,
        action=f"admin.job_{action.name}",
        resource_type="job",
        resource_id=(job_ids or list(outcome.skipped))[0] if single else "",
        details=details,
        success=bool(job_ids) or not outcome.skipped,
        error_message="; ".join(f"{k}: {v}" for k, v in outcome.skipped.items())[:1000],
    )


def report(request, action: JobAction, outcome: ActionOutcome) -> None:
    if outcome.done:
        messages.success(request, f"{len(outcome.done)} job(s) {action.past}.")
    for job_id, why in list(outcome.skipped.items())[:10]:
        messages.warning(request, f"Job {job_id} skipped: {why}")
    if len(outcome.skipped) > 10:
        messages.warning(request, f"… and {len(outcome.skipped) - 10} more skipped.")


def confirmation_response(
    modeladmin,
    request,
    action: JobAction,
    jobs: list[JobRecord],
    *,
    form,
    total: int,
    bulk: bool,
    select_across: bool = False,
):
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"{action.verb} {total} job(s)?",
        "opts": opts,
        "action": action,
        "jobs": jobs[:PREVIEW_JOBS],
        "more": max(total - PREVIEW_JOBS, 0),
        "total": total,
        "form": form,
        "bulk": bulk,
        "select_across": select_across,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media,
    }
    return TemplateResponse(request, "admin/queues/jobrecord/confirm_action.html", context)


def bulk_action(modeladmin, request, queryset, name: str):
    """Body of every changelist action: show the confirmation page, or perform once confirmed."""
    action = ACTIONS[name]
    jobs = list(queryset.select_related("owner").order_by("-created_at")[: MAX_BULK_JOBS + 1])
    if len(jobs) > MAX_BULK_JOBS:
        modeladmin.message_user(
            request,
            f"At most {MAX_BULK_JOBS} jobs per action; narrow the selection with the filters.",
            messages.ERROR,
        )
        return None
    select_across = request.POST.get("select_across") == "1"
    if request.POST.get("confirm") == "yes":
        form = ReasonForm(request.POST)
        if form.is_valid():
            outcome = job_action_perform(modeladmin, request, action, jobs, form.cleaned_data["reason"])
            report(request, action, outcome)
            return None
    else:
        form = ReasonForm()
    return confirmation_response(
        modeladmin, request, action, jobs, form=form, total=len(jobs), bulk=True, select_across=select_across
    )
