"""What users and staff do to jobs and queues: retry, cancel, copies, pause, retention."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from queues import signals
from queues.connections import get_connection
from queues.constants import FINAL_STATUSES, JobStatus, QueueName
from queues.keys import PAUSE_CHANNEL, paused_key
from queues.models import JobAttempt, JobRecord
from queues.services.enqueue import job_definition_get, job_enqueue, job_push_safely
from queues.services.fair import fair_job_remove, queue_is_fair
from slimy_site.exceptions import Conflict, ValidationFailed

logger = logging.getLogger(__name__)


def _queued_again(definition) -> dict:
    """What a retry writes on a failed (or cancelled) record: waiting again, with a fresh attempt budget."""
    return dict(
        status=JobStatus.QUEUED,
        max_attempts=F("attempts") + definition.retry.max_attempts,
        scheduled_for=None,
        finished_at=None,
        error_code="",
        error_message="",
        error_traceback="",
        result=None,
        updated_at=timezone.now(),
    )


def job_retry(*, job: JobRecord, actor=None) -> JobRecord:
    """Run a failed or cancelled job again with a fresh attempt budget."""
    definition = job_definition_get(job.job_type)
    with transaction.atomic():
        updated = JobRecord.objects.filter(pk=job.pk, status__in=[JobStatus.FAILED, JobStatus.CANCELLED]).update(
            **_queued_again(definition)
        )
        if not updated:
            raise Conflict(
                f"Only failed or cancelled jobs can be retried; this one is {job.status}.", code="job_not_retryable"
            )
        transaction.on_commit(lambda: job_push_safely(job.pk))
    job.refresh_from_db()
    signals.job_enqueued.send(sender=JobRecord, job=job)
    return job


def job_cancel(*, job: JobRecord, actor=None) -> JobRecord:
    """Cancel a waiting job (removed from Redis) or a running one (its worker is asked to stop it)."""
    with transaction.atomic():
        previous = JobRecord.objects.select_for_update().get(pk=job.pk).status
        if previous in FINAL_STATUSES:
            raise Conflict(f"The job is already {previous}.", code="job_not_cancellable")
        _mark_cancelled(job_id=job.pk)
    _remove_from_redis(job_id=str(job.pk), running=previous == JobStatus.STARTED, record=job)
    job.refresh_from_db()
    signals.job_finished.send(sender=JobRecord, job=job, outcome="cancelled", duration=None)
    return job


def _mark_cancelled(*, job_id) -> None:
    """Inside the caller's transaction: the record is cancelled and its running attempt closed."""
    now = timezone.now()
    JobRecord.objects.filter(pk=job_id).update(status=JobStatus.CANCELLED, finished_at=now, updated_at=now)
    JobAttempt.objects.filter(job_id=job_id, outcome=JobAttempt.Outcome.RUNNING).update(
        outcome=JobAttempt.Outcome.CANCELLED, finished_at=now
    )


def _remove_from_redis(*, job_id: str, running: bool, record: JobRecord | None = None) -> None:
    conn = get_connection()
    try:
        if not running and record is not None and queue_is_fair(record.queue):
            fair_job_remove(conn=conn, job=record)  # out of its tenant's line (RQ's hash goes below)
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
            _mark_cancelled(job_id=job.pk)
    if previous == JobStatus.STARTED:
        _remove_from_redis(job_id=str(job.pk), running=True)
    _remove_from_redis(job_id=str(job.pk), running=False, record=job)
    job.refresh_from_db()
    if previous not in FINAL_STATUSES:
        signals.job_finished.send(sender=JobRecord, job=job, outcome="cancelled", duration=None)
    return job


def queue_pause(*, queue: str, actor=None, reason: str = "") -> None:
    """Workers stop taking this queue's jobs (runtime workers at once, being told; the forking worker within
    about two seconds); submissions are still accepted."""
    if queue not in QueueName.values:
        raise ValidationFailed(details={"queue": [f"Unknown queue {queue!r}."]})
    info = {"at": timezone.now().isoformat(), "by": getattr(actor, "username", "") or "", "reason": reason[:500]}
    conn = get_connection()
    conn.set(paused_key(queue), json.dumps(info))
    _announce_pause_change(conn, queue)


def queue_resume(*, queue: str, actor=None) -> bool:
    """Returns whether the queue was paused."""
    if queue not in QueueName.values:
        raise ValidationFailed(details={"queue": [f"Unknown queue {queue!r}."]})
    conn = get_connection()
    was_paused = bool(conn.delete(paused_key(queue)))
    _announce_pause_change(conn, queue)
    return was_paused


def _announce_pause_change(conn, queue: str) -> None:
    # The key is what counts (workers also re-read it every second); the message only makes runtime
    # workers notice at once, so a job submitted right after a pause is not started.
    try:
        conn.publish(PAUSE_CHANNEL, queue)
    except (RedisError, OSError):
        logger.warning("could not announce the pause change of queue %s; workers notice within a second", queue)


def job_retry_failed_of_type(*, job_type: str, actor=None, limit: int = 1000) -> list[JobRecord]:
    """Retry up to `limit` failed jobs of one type (oldest first) with a fresh attempt budget.

    One UPDATE for the batch; the pushes to Redis happen on commit. Returns the retried records.
    """
    definition = job_definition_get(job_type)
    with transaction.atomic():
        ids = list(
            JobRecord.objects.filter(job_type=job_type, status=JobStatus.FAILED)
            .order_by("created_at")
            .values_list("pk", flat=True)[:limit]
        )
        JobRecord.objects.filter(pk__in=ids, status=JobStatus.FAILED).update(**_queued_again(definition))
        jobs = list(JobRecord.objects.filter(pk__in=ids, status=JobStatus.QUEUED))
        for job in jobs:
            transaction.on_commit(functools.partial(job_push_safely, job.pk))
    for job in jobs:
        signals.job_enqueued.send(sender=JobRecord, job=job)
    return jobs


def job_records_clean(*, before: dt.datetime, batch_size: int = 5000) -> int:
    """Delete finished records (completed, failed, cancelled) created and finished before `before`.

    Their attempts go with them. Deletes in batches so no single transaction holds a huge lock set.
    Returns the number of records deleted.
    """
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
            deleted += (
                JobRecord.objects.filter(pk__in=ids, status__in=FINAL_STATUSES)
                .delete()[1]
                .get(JobRecord._meta.label, 0)
            )


def job_records_expire() -> int:
    """Retention: delete finished records older than JOB_RECORD_RETENTION_DAYS (a periodic hook)."""
    return job_records_clean(before=timezone.now() - dt.timedelta(days=settings.JOB_RECORD_RETENTION_DAYS))
