"""The one RQ entry point for every job: start → validate → run → record the outcome.

RQ carries only the record id. Metrics hooks (queues.signals), log context and the retry policy
are applied here once for all job types. This is the only place that catches broad exceptions,
and it records them before re-raising.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time

from django.db import close_old_connections
from rest_framework import serializers
from rq import Retry, get_current_job

from queues import signals
from queues.definitions import JobCancelled, JobContext, PermanentJobError, TransientJobError, registry
from queues.logging import log_context
from queues.models import JobRecord
from queues.services import job_attempt_failed, job_complete, job_start

logger = logging.getLogger("queues.runner")


# Set by the batch worker (queues.batchworker), which runs jobs without an RQ "current job".
batch_worker_name: str | None = None


def _worker_name() -> str:
    if batch_worker_name is not None:
        return batch_worker_name
    rq_job = get_current_job()
    return (rq_job.worker_name or "") if rq_job else "inline"


def _job_log_context(job: JobRecord):
    return log_context(job_id=str(job.id), job_type=job.job_type, queue=job.queue, request_id=job.request_id or None)


def execute(job_id: str):
    close_old_connections()
    job = job_start(job_id=job_id, worker_name=_worker_name())
    if job is None:
        # Cancelled, already finished, or being run by someone else: a duplicate delivery is harmless.
        logger.info("job %s is not waiting; skipped", job_id)
        return None
    with _job_log_context(job):
        return _run(job)


def execute_started(job: JobRecord, *, defer_complete, time_limit):
    """Run a record the batch worker already marked started (queues.fastpath.job_start_batch).

    As `execute`, except that a success is handed to `defer_complete(job, result, duration)` (the
    worker records a batch of completions in one statement, then calls `job_completed`), the run is
    wrapped in `time_limit(seconds)` (the hard timeout), and a failure is recorded but not re-raised.
    Returns RQ's `Retry` when the record now waits for another attempt (the caller pushes it again).
    """
    with _job_log_context(job):
        return _run(job, defer_complete=defer_complete, time_limit=time_limit, reraise=False)


def job_completed(job: JobRecord, duration: float, completed: bool) -> None:
    """Log and signal a completion the batch worker recorded (the tail of `_run` for deferred jobs)."""
    with _job_log_context(job):
        if completed:
            logger.info("job completed in %.3f s", duration)
            signals.job_finished.send(sender=JobRecord, job=job, outcome="completed", duration=duration)
        else:
            logger.info("job finished but was cancelled meanwhile; result discarded")


def _run(job: JobRecord, *, defer_complete=None, time_limit=None, reraise=True):
    due = job.scheduled_for or job.created_at
    wait = max((job.started_at - due).total_seconds(), 0.0)
    signals.job_started.send(sender=JobRecord, job=job, wait=wait)
    logger.info("job started (attempt %s of %s)", job.attempts, job.max_attempts)
    started = time.monotonic()

    definition = registry.get(job.job_type)
    if definition is None:
        exc = PermanentJobError(f"Unknown job type {job.job_type!r}.", code="unknown_job_type")
        _failed(job, exc, permanent=True, started=started)
        if not reraise:
            return None
        raise exc
    try:
        payload = definition.validate(job.payload)
    except serializers.ValidationError as exc:
        error = PermanentJobError(f"Invalid payload: {exc.detail}", code="invalid_payload")
        _failed(job, error, permanent=True, started=started)
        if not reraise:
            return None
        raise error from exc

    context = JobContext(
        job_id=str(job.id), job_type=job.job_type, queue=job.queue, attempt=job.attempts,
        max_attempts=job.max_attempts, owner_id=job.owner_id, request_id=job.request_id,
        worker_name=job.worker_name,
    )
    try:
        with time_limit(definition.timeout) if time_limit else contextlib.nullcontext():
            result = definition().run(payload, context)
    except JobCancelled:
        logger.info("job cancelled while running")
        job_attempt_failed(job=job, exc=JobCancelled("cancelled"), permanent=True)
        return None
    except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised or retried
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        permanent = definition.is_permanent(exc)
        retry_after = exc.retry_after if isinstance(exc, TransientJobError) else None
        delay = _failed(job, exc, permanent=permanent, started=started, retry_after=retry_after)
        if delay is not None:
            # RQ reschedules this same job id after `delay`; the record already says `retrying`.
            return Retry(max=job.max_attempts, interval=max(math.ceil(delay), 1))
        if not reraise:
            return None  # recorded above; the batch worker goes on with its next job
        raise

    duration = time.monotonic() - started
    if defer_complete is not None:
        defer_complete(job, result, duration)
        return {"status": "completed"}
    job_completed(job, duration, job_complete(job=job, result=result))
    return {"status": job.status}


def _failed(job, exc, *, permanent, started, retry_after=None):
    duration = time.monotonic() - started
    delay = job_attempt_failed(job=job, exc=exc, permanent=permanent, retry_after=retry_after)
    if delay is not None:
        logger.warning("attempt %s failed (%s); retrying in %.1f s", job.attempts, exc, delay)
        signals.job_finished.send(sender=JobRecord, job=job, outcome="retried", duration=duration)
    elif job.status == "failed":
        logger.error("job failed after %s attempt(s): %s", job.attempts, exc)
        signals.job_finished.send(sender=JobRecord, job=job, outcome="failed", duration=duration)
    return delay
