"""Admin views added through JobRecordAdmin.get_urls: the queue dashboard, its operations, and the
confirmation page of an action on one job. They check permissions, adapt forms and call services.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from django import forms
from django.apps import apps
from django.contrib import messages
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, Resolver404, resolve, reverse
from django.utils import timezone

from queues import services
from queues.admin import actions as admin_actions
from queues.admin import dashboard
from queues.constants import FINAL_STATUSES, JobStatus, QueueName
from queues.definitions import registry
from queues.models import JobRecord
from queues.selectors import queryset_count_estimate
from slimy_site.exceptions import ApplicationError

DASHBOARD_REFRESH_SECONDS = 10

# Which statuses each action can apply to, so the detail page only offers what would work.
ACTION_STATUSES: dict[str, set[str]] = {
    "retry": {JobStatus.FAILED, JobStatus.CANCELLED},
    "cancel": set(JobStatus.values) - FINAL_STATUSES,
    "requeue_copy": set(JobStatus.values),
    "delete_from_redis": set(JobStatus.values),
}


def _url(name, *args, query=""):
    try:
        return reverse(name, args=args) + query
    except NoReverseMatch:
        return None


def _log(request, message: str, *, object_repr: str, flag: int = CHANGE) -> None:
    LogEntry.objects.create(
        user_id=request.user.pk,
        content_type=ContentType.objects.get_for_model(JobRecord),
        object_id="",
        object_repr=object_repr[:200],
        action_flag=flag,
        change_message=message,
    )


# --- the detail page of one job


def _model(label: str):
    try:
        return apps.get_model(label)
    except LookupError:
        return None


def _has_field(model, name: str) -> bool:
    try:
        model._meta.get_field(name)
        return True
    except FieldDoesNotExist:
        return False


def job_related_links(job: JobRecord) -> list[dict]:
    """Links to what the job touched. Chat and audit are separate apps: each link is only shown when
    the model, its field and its admin page exist."""
    links = []
    if job.request_id:
        links.append(
            {
                "label": f"Jobs of request {job.request_id}",
                "url": _url("admin:queues_jobrecord_changelist", query=f"?q={job.request_id}"),
            }
        )
    ids = {
        str(v)
        for k, v in {**(job.payload or {}), **(job.result if isinstance(job.result, dict) else {})}.items()
        if k in ("conversation_id", "conversationId") and v
    }
    conversation = _model("chat.Conversation")
    if conversation is not None:
        for conv_id in sorted(ids):
            links.append({"label": f"Conversation {conv_id}", "url": _url("admin:chat_conversation_change", conv_id)})
        if _has_field(conversation, "created_by_job_id"):
            for pk in conversation.objects.filter(created_by_job_id=job.pk).values_list("pk", flat=True)[:5]:
                links.append(
                    {
                        "label": f"Conversation {pk} (created by this job)",
                        "url": _url("admin:chat_conversation_change", pk),
                    }
                )
    message = _model("chat.Message")
    if message is not None and _has_field(message, "job_id"):
        for pk in message.objects.filter(job_id=job.pk).values_list("pk", flat=True)[:5]:
            links.append({"label": f"Message {pk} (written by this job)", "url": _url("admin:chat_message_change", pk)})
    audit = _model("audit.AuditLog")
    if audit is not None:
        if _has_field(audit, "resource_id"):
            links.append(
                {
                    "label": "Audit events about this job",
                    "url": _url("admin:audit_auditlog_changelist", query=f"?resource_id={job.pk}"),
                }
            )
        if job.request_id and _has_field(audit, "request_id"):
            links.append(
                {
                    "label": "Audit events of its request",
                    "url": _url("admin:audit_auditlog_changelist", query=f"?request_id={job.request_id}"),
                }
            )
    return [link for link in links if link["url"]]


def _output_url(job: JobRecord) -> str | None:
    """The live-output endpoint of a chat job, when this server has it (it belongs to the chat area)."""
    url = f"/api/jobs/{job.pk}/output"
    try:
        resolve(url)
    except Resolver404:
        return None
    return url


def job_detail_context(modeladmin, request, object_id) -> dict:
    job = JobRecord.objects.filter(pk=object_id).first() if _is_uuid(object_id) else None
    if job is None:
        return {}
    actions = []
    for action in admin_actions.ACTIONS.values():
        allowed = getattr(modeladmin, f"has_{action.permission}_permission")(request)
        if allowed and job.status in ACTION_STATUSES[action.name]:
            actions.append({"action": action, "url": reverse("admin:queues_jobrecord_act", args=[job.pk, action.name])})
    attempts = list(job.attempt_history.all())
    return {
        "job": job,
        "job_actions": actions,
        "attempts": attempts,
        "related_links": job_related_links(job),
        "output_url": _output_url(job) if job.queue == QueueName.CHAT else None,
        "show_output_panel": job.queue == QueueName.CHAT,
        "status_url": _url("job-detail", str(job.pk)),
        "job_is_final": job.status in FINAL_STATUSES,
    }


def _is_uuid(value) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


def job_action_view(modeladmin):
    def view(request, object_id, action):
        spec = admin_actions.ACTIONS.get(action)
        if spec is None or not _is_uuid(object_id):
            raise Http404("No such action or job.")
        if not getattr(modeladmin, f"has_{spec.permission}_permission")(request):
            raise PermissionDenied
        job = JobRecord.objects.select_related("owner").filter(pk=object_id).first()
        if job is None:
            raise Http404("No such job.")
        change_url = reverse("admin:queues_jobrecord_change", args=[job.pk])
        form = admin_actions.ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            outcome = admin_actions.job_action_perform(modeladmin, request, spec, [job], form.cleaned_data["reason"])
            admin_actions.report(request, spec, outcome)
            if spec.name == "requeue_copy" and outcome.copies:
                return HttpResponseRedirect(
                    reverse("admin:queues_jobrecord_change", args=[outcome.copies[str(job.pk)]])
                )
            return HttpResponseRedirect(change_url)
        response = admin_actions.confirmation_response(modeladmin, request, spec, [job], form=form, total=1, bulk=False)
        response.context_data["cancel_url"] = change_url
        return response

    return view


# --- the queue dashboard and its operations


class QueueForm(forms.Form):
    queue = forms.ChoiceField(choices=QueueName.choices)
    reason = forms.CharField(required=False, max_length=500)


class RetryFailedForm(forms.Form):
    job_type = forms.ChoiceField(choices=())
    reason = forms.CharField(required=False, max_length=500)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["job_type"]).choices = [(n, n) for n in sorted(registry.all())]


class CleanForm(forms.Form):
    before = forms.DateField(
        help_text="Finished records created and finished before this day (UTC) are deleted.",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    reason = forms.CharField(required=False, max_length=500)

    def clean_before(self):
        before = self.cleaned_data["before"]
        if before > timezone.now().date():
            raise forms.ValidationError("The date is in the future.")
        if before == timezone.now().date():
            raise forms.ValidationError("Choose a day before today: today's records may still be looked at.")
        return before

    def cutoff(self) -> dt.datetime:
        return dt.datetime.combine(self.cleaned_data["before"], dt.time.min, tzinfo=dt.UTC)


def _require(modeladmin, request, *permissions):
    if not modeladmin.has_view_permission(request):
        raise PermissionDenied
    for permission in permissions:
        if not getattr(modeladmin, f"has_{permission}_permission")(request):
            raise PermissionDenied


def _render_dashboard(modeladmin, request, **forms_):
    can_manage = modeladmin.has_manage_queues_permission(request)
    context = {
        **modeladmin.admin_site.each_context(request),
        **dashboard.queue_dashboard(),
        "title": "Queues",
        "opts": modeladmin.model._meta,
        "can_manage": can_manage,
        "can_retry": modeladmin.has_retry_permission(request) and can_manage,
        "can_clean": can_manage and modeladmin.has_delete_permission(request),
        "retry_form": forms_.get("retry_form") or RetryFailedForm(),
        "clean_form": forms_.get("clean_form") or CleanForm(),
        "rq_url": _url("django_rq:home") if can_manage else None,  # gated by the same permission
        "changelist_url": reverse("admin:queues_jobrecord_changelist"),
        "ledger_statuses": dashboard.LEDGER_STATUSES,
        "refresh_seconds": DASHBOARD_REFRESH_SECONDS,
    }
    return TemplateResponse(request, "admin/queues/dashboard.html", context)


def dashboard_view(modeladmin):
    def view(request):
        _require(modeladmin, request)
        return _render_dashboard(modeladmin, request)

    return view


def _queue_op(modeladmin, *, pause: bool):
    def view(request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        _require(modeladmin, request, "manage_queues")
        form = QueueForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Invalid request: {form.errors.as_text()}")
            return HttpResponseRedirect(reverse("admin:queues_jobrecord_dashboard"))
        queue, reason = form.cleaned_data["queue"], form.cleaned_data["reason"]
        if pause:
            services.queue_pause(queue=queue, actor=request.user, reason=reason)
            text, changed = f"Paused queue {queue}.", True
        else:
            changed = services.queue_resume(queue=queue, actor=request.user)
            text = f"Resumed queue {queue}." if changed else f"Queue {queue} was not paused."
        if changed:
            _log(request, text + (f" Reason: {reason}" if reason else ""), object_repr=f"queue {queue}")
            admin_actions.audit_record(
                request,
                action=f"admin.queue_{'pause' if pause else 'resume'}",
                resource_type="queue",
                resource_id=queue,
                details={"reason": reason},
            )
        messages.success(request, text)
        return HttpResponseRedirect(reverse("admin:queues_jobrecord_dashboard"))

    return view


def queue_pause_view(modeladmin):
    return _queue_op(modeladmin, pause=True)


def queue_resume_view(modeladmin):
    return _queue_op(modeladmin, pause=False)


def _confirm_operation(modeladmin, request, *, title, explanation, count, form, url, estimated=False):
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "explanation": explanation,
        "count": count,
        "estimated": estimated,
        "form": form,
        "url": url,
        "cancel_url": reverse("admin:queues_jobrecord_dashboard"),
    }
    return TemplateResponse(request, "admin/queues/confirm_operation.html", context)


def retry_failed_view(modeladmin):
    def view(request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        _require(modeladmin, request, "manage_queues", "retry")
        form = RetryFailedForm(request.POST)
        if not form.is_valid():
            return _render_dashboard(modeladmin, request, retry_form=form)
        job_type, reason = form.cleaned_data["job_type"], form.cleaned_data["reason"]
        if request.POST.get("confirm") != "yes":
            count = JobRecord.objects.filter(job_type=job_type, status=JobStatus.FAILED).count()
            return _confirm_operation(
                modeladmin,
                request,
                title=f"Retry failed {job_type} jobs?",
                count=count,
                form=form,
                explanation=f"Up to {admin_actions.MAX_BULK_JOBS} failed jobs of this type (oldest first) are "
                "queued again with a fresh attempt budget.",
                url=reverse("admin:queues_jobrecord_retry_failed"),
            )
        try:
            jobs = services.job_retry_failed_of_type(
                job_type=job_type, actor=request.user, limit=admin_actions.MAX_BULK_JOBS
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(reverse("admin:queues_jobrecord_dashboard"))
        for job in jobs:
            modeladmin.log_change(
                request, job, "Retried (all failed of its type) via admin." + (f" Reason: {reason}" if reason else "")
            )
        admin_actions.audit_record(
            request,
            action="admin.job_retry_failed_of_type",
            resource_type="job",
            details={"reason": reason, "jobType": job_type, "jobs": [str(j.pk) for j in jobs]},
        )
        messages.success(request, f"{len(jobs)} failed {job_type} job(s) retried.")
        return HttpResponseRedirect(reverse("admin:queues_jobrecord_dashboard"))

    return view


def clean_view(modeladmin):
    def view(request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        _require(modeladmin, request, "manage_queues", "delete")
        form = CleanForm(request.POST)
        if not form.is_valid():
            return _render_dashboard(modeladmin, request, clean_form=form)
        cutoff, reason = form.cutoff(), form.cleaned_data["reason"]
        if request.POST.get("confirm") != "yes":
            matching = JobRecord.objects.filter(created_at__lt=cutoff, status__in=FINAL_STATUSES)
            count, estimated = queryset_count_estimate(matching)
            return _confirm_operation(
                modeladmin,
                request,
                title=f"Delete finished job records before {cutoff:%Y-%m-%d}?",
                count=count,
                estimated=estimated,
                form=form,
                url=reverse("admin:queues_jobrecord_clean"),
                explanation="Completed, failed and cancelled records created and finished before that day are "
                "deleted with their attempt history. Waiting and running jobs are never touched.",
            )
        deleted = services.job_records_clean(before=cutoff)
        _log(
            request,
            f"Deleted {deleted} finished job records before {cutoff:%Y-%m-%d}."
            + (f" Reason: {reason}" if reason else ""),
            object_repr=f"job records before {cutoff:%Y-%m-%d}",
            flag=DELETION,
        )
        admin_actions.audit_record(
            request,
            action="admin.job_records_clean",
            resource_type="job",
            details={"reason": reason, "before": cutoff.isoformat(), "deleted": deleted},
        )
        messages.success(request, f"{deleted} finished job record(s) deleted.")
        return HttpResponseRedirect(reverse("admin:queues_jobrecord_dashboard"))

    return view
