"""Writes to the job ledger and the queues: enqueue, retry, cancel, and the runner's transitions.

PostgreSQL is the source of truth; Redis only carries job ids. A record is written in the caller's
transaction and pushed to RQ when that transaction commits, so a rolled-back write enqueues nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import traceback as tb

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework import serializers
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from queues import signals
from queues.constants import FINAL_STATUSES, WAITING_STATUSES, JobStatus, Priority
from queues.definitions import JobDefinition, registry
from queues.logging import current_request_id
from queues.models import JobAttempt, JobRecord
from queues.redis import get_connection, get_rq_queue
from slimy_site.exceptions import ApplicationError, Conflict, ValidationFailed

logger = logging.getLogger(__name__)

RUNNER = "queues.runner.execute"
IDEMPOTENCY_WINDOW = dt.timedelta(hours=24)
MAX_DELAY = dt.timedelta(days=30)


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    status = 422
    message = "This Idempotency-Key was already used with a different request."


class UnknownJobType(ApplicationError):
    code = "unknown_job_type"
    status = 400
    message = "Unknown job type."


def _definition(job_type: str) -> type[JobDefinition]:
    definition = registry.get(job_type)
    if definition is None:
        raise UnknownJobType(f"Unknown job type: {job_type!r}.")
    return definition


def payload_fingerprint(job_type: str, payload: dict, priority: str = Priority.NORMAL) -> str:
    canonical = json.dumps([job_type, payload, priority], sort_keys=True, cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _scheduled_for(run_at: dt.datetime | None, delay: float | None) -> dt.datetime | None:
    if run_at is not None and delay is not None:
        raise ValidationFailed(details={"delay": ["Give run_at or delay, not both."]})
    now = timezone.now()
    if delay is not None:
        if delay < 0:
            raise ValidationFailed(details={"delay": ["Must not be negative."]})
        run_at = now + dt.timedelta(seconds=delay)
    if run_at is None:
        return None
    if timezone.is_naive(run_at):
        raise ValidationFailed(details={"run_at": ["Must carry a time zone."]})
    if run_at - now > MAX_DELAY:
        raise ValidationFailed(details={"run_at": ["Must be within 30 days."]})
    return run_at if run_at > now else None


def job_enqueue(
    *,
    job_type: str,
    payload: dict,
    owner=None,
    priority: str = Priority.NORMAL,
    run_at: dt.datetime | None = None,
    delay: float | None = None,
    idempotency_key: str | None = None,
    request_id: str | None = None,
) -> JobRecord:
    """Validate, write the record, push to RQ on commit. Returns the record.

    With an idempotency key already used by the same owner (within 24 h), returns that job
    instead (its `replayed` attribute is True); a different payload under the same key is a 422.
    """
    definition = _definition(job_type)
    if priority not in Priority.values:
        raise ValidationFailed(details={"priority": [f"Must be one of {', '.join(Priority.values)}."]})
    try:
        clean = definition.validate(payload)
    except serializers.ValidationError as exc:
        raise ValidationFailed(details=exc.detail) from exc
    scheduled_for = _scheduled_for(run_at, delay)
    fingerprint = payload_fingerprint(job_type, clean, priority) if idempotency_key else ""

    if idempotency_key:
        existing = _idempotent_match(owner, idempotency_key, fingerprint)
        if existing is not None:
            return existing

    record = JobRecord(
        job_type=job_type,
        queue=definition.queue,
        owner=owner if owner is not None and owner.is_authenticated else None,
        payload=clean,
        priority=priority,
        max_attempts=definition.retry.max_attempts,
        scheduled_for=scheduled_for,
        status=JobStatus.SCHEDULED if scheduled_for else JobStatus.QUEUED,
        request_id=request_id if request_id is not None else current_request_id(),
        idempotency_key=idempotency_key or None,
        idempotency_fingerprint=fingerprint,
    )
    try:
        with transaction.atomic():
            record.save(force_insert=True)
    except IntegrityError:
        # A concurrent request with the same key won the insert: answer with its job.
        existing = _idempotent_match(owner, idempotency_key, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing
    record.replayed = False
    # The record just written is what gets pushed: no need to read it back.
    transaction.on_commit(lambda: _push_safely(record.pk, record=record))
    # Counted on commit: a rolled-back write enqueued nothing.
    transaction.on_commit(lambda: signals.job_enqueued.send(sender=JobRecord, job=record))
    return record


def _idempotent_match(owner, key: str, fingerprint: str) -> JobRecord | None:
    if owner is None or not owner.is_authenticated:
        return None
    existing = JobRecord.objects.filter(owner=owner, idempotency_key=key).first()
    if existing is None:
        return None
    if existing.created_at < timezone.now() - IDEMPOTENCY_WINDOW:
        # The key expired: free it so a new job may take it.
        JobRecord.objects.filter(pk=existing.pk).update(idempotency_key=None)
        return None
    if existing.idempotency_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    existing.replayed = True
    return existing


def _push_safely(job_id, record: JobRecord | None = None) -> None:
    """Push after commit. If Redis is unreachable the record stays waiting and the reconciler pushes it."""
    try:
        job_push(job=record if record is not None else JobRecord.objects.get(pk=job_id))
    except (RedisError, OSError):
        logger.warning("push to Redis failed; the reconciler will enqueue job %s", job_id, exc_info=True)


def job_push(*, job: JobRecord) -> None:
    """Put the record's id on its RQ queue (or in the scheduled registry when it runs later)."""
    definition = registry.get(job.job_type)
    timeout = definition.timeout if definition else 60
    ttl = (definition.result_ttl if definition else None) or settings.JOB_RESULT_TTL
    queue = get_rq_queue(job.queue, job.priority)
    options = dict(
        job_id=str(job.id),
        job_timeout=timeout,
        result_ttl=ttl,
        failure_ttl=ttl,
        description=job.job_type,
        meta={"job_type": job.job_type},
    )
    with queue.connection.pipeline() as pipe:
        # One round trip (one MULTI/EXEC) for enqueuing and forgetting a failed copy. The enqueue goes
        # first: RQ opens the transaction (MULTI) itself and refuses a pipeline with commands in it.
        if job.scheduled_for and job.scheduled_for > timezone.now():
            # RQ's scheduler keeps whole seconds (truncated): round up so a job never starts early.
            due = job.scheduled_for.replace(microsecond=0) + dt.timedelta(seconds=1 if job.scheduled_for.microsecond else 0)
            queue.enqueue_at(due, RUNNER, str(job.id), pipeline=pipe, **options)
        else:
            queue.enqueue(RUNNER, str(job.id), pipeline=pipe, **options)
        queue.failed_job_registry.remove(str(job.id), pipeline=pipe)
        pipe.execute()


def job_retry(*, job: JobRecord, actor=None) -> JobRecord:
    """Run a failed or cancelled job again with a fresh attempt budget."""
    definition = _definition(job.job_type)
    with transaction.atomic():
        updated = JobRecord.objects.filter(
            pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]
        ).update(
            status=JobStatus.QUEUED,
            max_attempts=F("attempts") + definition.retry.max_attempts,
            scheduled_for=None,
            finished_at=None,
            error_code="",
            error_message="",
            error_traceback="",
            result=None,
        )
        if not updated:
            raise Conflict(f"Only failed or cancelled jobs can be retried; this one is {job.status}.",
                           code="job_not_retryable")
        transaction.on_commit(lambda: _push_safely(job.pk))
    job.refresh_from_db()
    signals.job_enqueued.send(sender=JobRecord, job=job)
    return job


def job_cancel(*, job: JobRecord, actor=None) -> JobRecord:
    """Cancel a waiting job (removed from Redis) or a running one (its worker is asked to stop it)."""
    with transaction.atomic():
        previous = JobRecord.objects.select_for_update().get(pk=job.pk).status
        if previous in FINAL_STATUSES:
            raise Conflict(f"The job is already {previous}.", code="job_not_cancellable")
        now = timezone.now()
        JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED, finished_at=now)
        JobAttempt.objects.filter(job_id=job.pk, outcome=JobAttempt.Outcome.RUNNING).update(
            outcome=JobAttempt.Outcome.CANCELLED, finished_at=now
        )
    _remove_from_redis(job_id=str(job.pk), running=previous == JobStatus.STARTED)
    job.refresh_from_db()
    signals.job_finished.send(sender=JobRecord, job=job, outcome="cancelled", duration=None)
    return job


def _remove_from_redis(*, job_id: str, running: bool) -> None:
    conn = get_connection()
    try:
        if running:
            try:
                send_stop_job_command(conn, job_id)
            except (NoSuchJobError, InvalidJobOperation):
                pass  # not executing in a forking worker: the runner sees the cancelled record
        else:
            try:
                Job.fetch(job_id, connection=conn).delete(remove_from_queue=True)
            except NoSuchJobError:
                pass
    except (RedisError, OSError):
        # The ledger already says cancelled; the runner refuses to start a cancelled record.
        logger.warning("could not remove job %s from Redis", job_id, exc_info=True)


def job_progress_set(*, job_id, progress) -> None:
    JobRecord.objects.filter(pk=job_id, status=JobStatus.STARTED).update(progress=progress)


# --- Transitions made by the runner (queues.runner) and the reconciler.


def job_start(*, job_id, worker_name: str) -> JobRecord | None:
    """Mark a waiting record started; None when it is not waiting (cancelled, finished, or taken)."""
    if connection.vendor == "postgresql":
        # One statement (UPDATE ... RETURNING + INSERT in a CTE) instead of five round trips.
        from queues.fastpath import job_start_batch

        started = job_start_batch(job_ids=[job_id], worker_name=worker_name)
        return started[0] if started else None
    now = timezone.now()
    with transaction.atomic():
        started = JobRecord.objects.filter(pk=job_id, status__in=WAITING_STATUSES).update(
            status=JobStatus.STARTED,
            attempts=F("attempts") + 1,
            started_at=now,
            worker_name=worker_name,
            progress=None,
        )
        if not started:
            return None
        job = JobRecord.objects.get(pk=job_id)
        JobAttempt.objects.create(job=job, number=job.attempts, worker_name=worker_name, started_at=now)
    return job


def job_complete(*, job: JobRecord, result) -> bool:
    if connection.vendor == "postgresql":
        # One statement for the record and its attempt instead of four round trips (queues.fastpath).
        from queues.fastpath import job_complete_batch

        return bool(job_complete_batch(outcomes=[(job, result)]))
    now = timezone.now()
    with transaction.atomic():
        done = JobRecord.objects.filter(pk=job.pk, status=JobStatus.STARTED, attempts=job.attempts).update(
            status=JobStatus.COMPLETED, result=result, finished_at=now, scheduled_for=None
        )
        outcome = JobAttempt.Outcome.COMPLETED if done else JobAttempt.Outcome.CANCELLED
        JobAttempt.objects.filter(job=job, number=job.attempts).update(outcome=outcome, finished_at=now)
    if done:
        job.status, job.result, job.finished_at = JobStatus.COMPLETED, result, now
    return bool(done)


def job_attempt_failed(
    *, job: JobRecord, exc: BaseException, permanent: bool, retry_after: float | None = None,
    attempt_outcome: str | None = None, traceback_text: str | None = None,
) -> float | None:
    """Record a failed attempt. Returns the delay before the next attempt, or None when final."""
    definition = registry.get(job.job_type)
    policy = definition.retry if definition else None
    now = timezone.now()
    message = str(exc)[:2000] or exc.__class__.__name__
    trace = traceback_text if traceback_text is not None else "".join(tb.format_exception(exc))
    code = getattr(exc, "code", "") or exc.__class__.__name__
    retry = not permanent and policy is not None and job.attempts < job.max_attempts
    delay = None
    if retry:
        delay = max(retry_after or 0.0, policy.delay_after(job.attempts))
    with transaction.atomic():
        fields = dict(error_code=str(code)[:64], error_message=message, error_traceback=trace)
        if retry:
            fields.update(status=JobStatus.RETRYING, scheduled_for=now + dt.timedelta(seconds=delay))
        else:
            fields.update(status=JobStatus.FAILED, finished_at=now, scheduled_for=None)
        changed = JobRecord.objects.filter(pk=job.pk, status=JobStatus.STARTED, attempts=job.attempts).update(**fields)
        if not changed:
            outcome, delay = JobAttempt.Outcome.CANCELLED, None
        else:
            outcome = attempt_outcome or (JobAttempt.Outcome.RETRIED if retry else JobAttempt.Outcome.FAILED)
        JobAttempt.objects.filter(job=job, number=job.attempts).update(
            outcome=outcome, finished_at=now, error_message=message, error_traceback=trace
        )
    if changed:
        job.refresh_from_db()
    return delay


def job_recover_abandoned(*, job_id, reason: str) -> str | None:
    """A started job whose process died: apply its retry policy and push it again.

    Returns the new status, or None when the record was not started (nothing to recover).
    """
    job = JobRecord.objects.filter(pk=job_id, status=JobStatus.STARTED).first()
    if job is None:
        return None
    delay = job_attempt_failed(
        job=job, exc=RuntimeError(reason), permanent=False, attempt_outcome=JobAttempt.Outcome.ABANDONED,
        traceback_text="",
    )
    if job.status == JobStatus.RETRYING:
        try:
            job_push(job=job)
        except (RedisError, OSError):
            logger.warning("push of recovered job %s failed; the reconciler retries it", job_id, exc_info=True)
        signals.job_finished.send(sender=JobRecord, job=job, outcome="retried", duration=None)
    elif job.status == JobStatus.FAILED:
        signals.job_finished.send(sender=JobRecord, job=job, outcome="failed", duration=None)
    logger.warning("job %s abandoned (%s): now %s, next attempt in %s s", job_id, reason, job.status, delay)
    return job.status


def job_complete_many(*, job_ids, result, worker_name: str = "") -> list:
    """Mark waiting records completed without running them: another job did their work (e.g. the
    audit worker writing several queued events in one statement). Records no longer waiting are left
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
            status=JobStatus.COMPLETED, attempts=F("attempts") + 1, started_at=now, finished_at=now,
            result=result, worker_name=worker_name, scheduled_for=None, progress=None,
            error_code="", error_message="", error_traceback="",
        )
        JobAttempt.objects.bulk_create([
            JobAttempt(job_id=pk, number=attempts + 1, worker_name=worker_name, started_at=now, finished_at=now,
                       outcome=JobAttempt.Outcome.COMPLETED)
            for pk, attempts in waiting
        ])

        def finished():
            for job in JobRecord.objects.filter(pk__in=ids):
                signals.job_finished.send(sender=JobRecord, job=job, outcome="completed", duration=0.0)

        transaction.on_commit(finished)
    return ids


# --- Staff operations (the admin control room). Audit and admin-log entries are written by the caller.


def job_requeue_copy(*, job: JobRecord, actor=None) -> JobRecord:
    """A new job with the same type, payload, owner and priority; the original is left as it is."""
    return job_enqueue(job_type=job.job_type, payload=job.payload, owner=job.owner, priority=job.priority)


def job_delete_from_redis(*, job: JobRecord, actor=None) -> JobRecord:
    """Remove every trace of the job from Redis (queue, registries, hash) and mark a live record cancelled.

    Unlike `job_cancel` it also accepts finished jobs (clearing what RQ still holds), and it never
    raises a conflict: the record ends cancelled unless it had already completed, failed or been cancelled.
    """
    with transaction.atomic():
        previous = JobRecord.objects.select_for_update().get(pk=job.pk).status
        if previous not in FINAL_STATUSES:
            JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED, finished_at=timezone.now())
    if previous == JobStatus.STARTED:
        _remove_from_redis(job_id=str(job.pk), running=True)
    conn = get_connection()
    try:
        Job.fetch(str(job.pk), connection=conn).delete(remove_from_queue=True)
    except NoSuchJobError:
        pass
    except (RedisError, OSError):
        logger.warning("could not delete job %s from Redis", job.pk, exc_info=True)
    job.refresh_from_db()
    if previous not in FINAL_STATUSES:
        signals.job_finished.send(sender=JobRecord, job=job, outcome="cancelled", duration=None)
    return job


def queue_pause(*, queue: str, actor=None, reason: str = "") -> None:
    """Workers stop taking this queue's jobs (within about two seconds); submissions are still accepted."""
    from queues.constants import QueueName
    from queues.worker import paused_key

    if queue not in QueueName.values:
        raise ValidationFailed(details={"queue": [f"Unknown queue {queue!r}."]})
    info = {"at": timezone.now().isoformat(), "by": getattr(actor, "username", "") or "", "reason": reason[:500]}
    get_connection().set(paused_key(queue), json.dumps(info))


def queue_resume(*, queue: str, actor=None) -> bool:
    """Returns whether the queue was paused."""
    from queues.constants import QueueName
    from queues.worker import paused_key

    if queue not in QueueName.values:
        raise ValidationFailed(details={"queue": [f"Unknown queue {queue!r}."]})
    return bool(get_connection().delete(paused_key(queue)))


def job_retry_failed_of_type(*, job_type: str, actor=None, limit: int = 1000) -> list[JobRecord]:
    """Retry up to `limit` failed jobs of one type (oldest first) with a fresh attempt budget.

    One UPDATE for the batch; the pushes to Redis happen on commit. Returns the retried records.
    """
    definition = _definition(job_type)
    with transaction.atomic():
        ids = list(
            JobRecord.objects.filter(job_type=job_type, status=JobStatus.FAILED)
            .order_by("created_at").values_list("pk", flat=True)[:limit]
        )
        JobRecord.objects.filter(pk__in=ids, status=JobStatus.FAILED).update(
            status=JobStatus.QUEUED,
            max_attempts=F("attempts") + definition.retry.max_attempts,
            scheduled_for=None, finished_at=None, error_code="", error_message="", error_traceback="",
            result=None,
        )
        jobs = list(JobRecord.objects.filter(pk__in=ids, status=JobStatus.QUEUED))
        for job in jobs:
            transaction.on_commit(lambda pk=job.pk: _push_safely(pk))
    for job in jobs:
        signals.job_enqueued.send(sender=JobRecord, job=job)
    return jobs


def job_records_clean(*, before: dt.datetime, batch_size: int = 5000) -> int:
    """Delete finished records (completed, failed, cancelled) created and finished before `before`.

    Their attempts go with them. Deletes in batches so no single transaction holds a huge lock set.
    Returns the number of records deleted.
    """
    from django.db.models import Q

    deleted = 0
    old = Q(created_at__lt=before, status__in=FINAL_STATUSES) & (
        Q(finished_at__lt=before) | Q(finished_at__isnull=True)
    )
    while True:
        ids = list(JobRecord.objects.filter(old).order_by().values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        with transaction.atomic():
            JobAttempt.objects.filter(job_id__in=ids).delete()
            deleted += JobRecord.objects.filter(pk__in=ids, status__in=FINAL_STATUSES).delete()[1].get(
                JobRecord._meta.label, 0
            )


def job_records_expire() -> int:
    """Retention: delete finished records older than JOB_RECORD_RETENTION_DAYS (a periodic hook)."""
    return job_records_clean(before=timezone.now() - dt.timedelta(days=settings.JOB_RECORD_RETENTION_DAYS))
