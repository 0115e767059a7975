"""State transitions made by the runner (queues.runner), the workers and the reconciler.

Every transition is a conditional UPDATE on the ledger, so a duplicate delivery or a late result
of a cancelled or recovered job changes nothing."""

from __future__ import annotations

import datetime as dt
import logging
import math
import traceback as tb
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from queues import signals
from queues.constants import WAITING_STATUSES, JobStatus
from queues.definitions import JobCancelled, registry
from queues.models import JobAttempt, JobRecord
from queues.output import output_fence_close
from queues.services.batch import job_complete_batch, job_start_batch
from queues.services.enqueue import job_push

logger = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3600  # seconds; a longer (or non-finite) Retry-After from a provider is not trusted


def job_progress_set(*, job_id, progress, attempt: int | None = None) -> bool:
    """Record progress; with `attempt`, only while that attempt is the running one (the fence)."""
    fence = {} if attempt is None else {"attempts": attempt}
    return bool(JobRecord.objects.filter(pk=job_id, status=JobStatus.STARTED, **fence).update(progress=progress))


def job_attempt_guard(*, job_id, attempt: int) -> None:
    """Inside the caller's transaction: lock the record; raise JobCancelled unless `attempt` is the running
    one. A job's side effects written after this commit only for the current attempt (the fence), and a
    cancel or a recovery of the record waits for them (and vice versa)."""
    if not JobRecord.objects.select_for_update().filter(pk=job_id, status=JobStatus.STARTED, attempts=attempt).exists():
        raise JobCancelled(str(job_id))


def job_start(*, job_id, worker_name: str) -> JobRecord | None:
    """Mark a waiting record started; None when it is not waiting (cancelled, finished, or taken)."""
    started = job_start_batch(job_ids=[job_id], worker_name=worker_name)
    return started[0] if started else None


def job_complete(*, job: JobRecord, result) -> bool:
    """Record a started job's result; False when its attempt is no longer current (cancelled, recovered)."""
    return bool(job_complete_batch(outcomes=[(job, result)]))


def job_attempt_failed(
    *,
    job: JobRecord,
    exc: BaseException,
    permanent: bool,
    retry_after: float | None = None,
    attempt_outcome: str | None = None,
    traceback_text: str | None = None,
    immediate: bool = False,
) -> float | None:
    """Record a failed attempt. Returns the delay before the next attempt, or None when final.

    `immediate`: the next attempt is due now, without the policy's back-off (the attempt did not fail,
    its process died: waiting helps nothing, and the person waiting on the reply waits longer).
    """
    definition = registry.get(job.job_type)
    policy = definition.retry if definition else None
    now = timezone.now()
    message = str(exc)[:2000] or exc.__class__.__name__
    trace = traceback_text if traceback_text is not None else "".join(tb.format_exception(exc))
    code = getattr(exc, "code", "") or exc.__class__.__name__
    delay: float | None = None
    if not permanent and policy is not None and job.attempts < job.max_attempts:
        # A provider's Retry-After is honoured, but never beyond what the policy itself could wait.
        hint = retry_after if retry_after is not None and math.isfinite(retry_after) else 0.0
        delay = (
            0.0
            if immediate
            else max(min(hint, max(policy.backoff_max, MAX_RETRY_AFTER)), policy.delay_after(job.attempts))
        )
    retry = delay is not None
    with transaction.atomic():
        fields: dict[str, Any] = dict(
            error_code=str(code)[:64], error_message=message, error_traceback=trace, updated_at=now
        )
        if delay is not None:
            fields.update(status=JobStatus.RETRYING, scheduled_for=now + dt.timedelta(seconds=delay))
        else:
            fields.update(status=JobStatus.FAILED, finished_at=now, scheduled_for=None)
        changed = JobRecord.objects.filter(pk=job.pk, status=JobStatus.STARTED, attempts=job.attempts).update(**fields)
        outcome: str
        if not changed:
            outcome, delay = JobAttempt.Outcome.CANCELLED, None
        else:
            outcome = attempt_outcome or (JobAttempt.Outcome.RETRIED if retry else JobAttempt.Outcome.FAILED)
        # A superseded attempt's row keeps what was recorded for it (abandoned, cancelled) if it was closed.
        attempt_row = {} if changed else {"outcome": JobAttempt.Outcome.RUNNING}
        JobAttempt.objects.filter(job=job, number=job.attempts, **attempt_row).update(
            outcome=outcome, finished_at=now, error_message=message, error_traceback=trace
        )
    if changed:
        job.refresh_from_db()
    return delay


def job_recover_abandoned(*, job_id, reason: str, immediate: bool = False, attempt: int | None = None) -> str | None:
    """A started job whose process died or gave it up: count the attempt and push it again (`immediate`:
    due now, without the retry policy's back-off — for a dead worker's jobs). `attempt`: only if that attempt
    is still the current one (a worker handing back its own attempt, never a newer one's).

    Returns the new status, or None when the record was not started (nothing to recover).
    """
    started = JobRecord.objects.filter(pk=job_id, status=JobStatus.STARTED)
    job = (started if attempt is None else started.filter(attempts=attempt)).first()
    if job is None:
        return None
    delay = job_attempt_failed(
        job=job,
        exc=RuntimeError(reason),
        permanent=False,
        attempt_outcome=JobAttempt.Outcome.ABANDONED,
        traceback_text="",
        immediate=immediate,
    )
    # The abandoned attempt may still be alive (frozen, partitioned): its output writes are refused from now on.
    try:
        output_fence_close(job_id=job_id, attempt=job.attempts)
    except (RedisError, OSError):
        logger.warning("could not fence off the output of job %s attempt %s", job_id, job.attempts)
    if job.status == JobStatus.RETRYING:
        try:
            # First in line: its attempt was already under way (someone may be watching the reply), so
            # the jobs submitted after it must not delay it again.
            job_push(job=job, front=True)
        except (RedisError, OSError):
            logger.warning("push of recovered job %s failed; the reconciler retries it", job_id, exc_info=True)
        signals.job_finished.send(sender=JobRecord, job=job, outcome="retried", duration=None)
    elif job.status == JobStatus.FAILED:
        signals.job_finished.send(sender=JobRecord, job=job, outcome="failed", duration=None)
    logger.warning("job %s abandoned (%s): now %s, next attempt in %s s", job_id, reason, job.status, delay)
    return job.status


def job_waiting_claim(*, job_type: str, limit: int, exclude_id=None) -> list[tuple]:
    """Inside the caller's transaction: lock up to `limit` queued, due records of `job_type`, oldest
    first, and return their (id, payload). FOR UPDATE SKIP LOCKED: concurrent callers take disjoint
    sets. For a job that does the work of others waiting (then `job_complete_waiting` on what it did)."""
    if limit <= 0:
        return []
    now = timezone.now()
    waiting = (
        JobRecord.objects.select_for_update(skip_locked=True)
        .filter(job_type=job_type, status=JobStatus.QUEUED)
        .filter(Q(scheduled_for__isnull=True) | Q(scheduled_for__lte=now))
        .exclude(pk=exclude_id)
        .order_by("created_at")
        .values_list("pk", "payload")[:limit]
    )
    return list(waiting)


def job_complete_waiting(*, job_ids, result, worker_name: str = "") -> list:
    """Mark waiting records completed without running them: another job did their work (e.g. the
    audit worker writing several queued events in one statement). Not `job_complete_batch`, which
    records the results of started jobs. Records no longer waiting are left
    alone. Their RQ deliveries later find them finished and skip them. Returns the ids completed."""
    now = timezone.now()
    with transaction.atomic():
        waiting = list(
            JobRecord.objects.select_for_update()
            .filter(pk__in=list(job_ids), status__in=WAITING_STATUSES)
            .values_list("pk", "attempts")
        )
        if not waiting:
            return []
        ids = [pk for pk, _ in waiting]
        JobRecord.objects.filter(pk__in=ids).update(
            status=JobStatus.COMPLETED,
            attempts=F("attempts") + 1,
            started_at=now,
            finished_at=now,
            result=result,
            worker_name=worker_name,
            scheduled_for=None,
            progress=None,
            error_code="",
            error_message="",
            error_traceback="",
        )
        JobAttempt.objects.bulk_create(
            [
                JobAttempt(
                    job_id=pk,
                    number=attempts + 1,
                    worker_name=worker_name,
                    started_at=now,
                    finished_at=now,
                    outcome=JobAttempt.Outcome.COMPLETED,
                )
                for pk, attempts in waiting
            ]
        )

        def finished():
            for job in JobRecord.objects.filter(pk__in=ids):
                signals.job_finished.send(sender=JobRecord, job=job, outcome="completed", duration=0.0)

        transaction.on_commit(finished)
    return ids
