"""The one RQ entry point for every job: start → validate → run → record the outcome.

RQ carries only the record id. Metrics hooks (queues.signals), log context and the retry policy
are applied here once for all job types. This is the only place that catches broad exceptions,
and it records them before re-raising.
"""

from __future__ import annotations

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


def _worker_name() -> str:
    rq_job = get_current_job()
    return (rq_job.worker_name or "") if rq_job else "inline"


def execute(job_id: str):
    close_old_connections()
    job = job_start(job_id=job_id, worker_name=_worker_name())
    if job is None:
        # Cancelled, already finished, or being run by someone else: a duplicate delivery is harmless.
        logger.info("job %s is not waiting; skipped", job_id)
        return None
    with log_context(job_id=str(job.id), job_type=job.job_type, queue=job.queue, request_id=job.request_id or None):
        return _run(job)


def _run(job: JobRecord):
    due = job.scheduled_for or job.created_at
    wait = max((job.started_at - due).total_seconds(), 0.0)
    signals.job_started.send(sender=JobRecord, job=job, wait=wait)
    logger.info("job started (attempt %s of %s)", job.attempts, job.max_attempts)
    started = time.monotonic()

    definition = registry.get(job.job_type)
    if definition is None:
        exc = PermanentJobError(f"Unknown job type {job.job_type!r}.", code="unknown_job_type")
        _failed(job, exc, permanent=True, started=started)
        raise exc
    try:
        payload = definition.validate(job.payload)
    except serializers.ValidationError as exc:
        error = PermanentJobError(f"Invalid payload: {exc.detail}", code="invalid_payload")
        _failed(job, error, permanent=True, started=started)
        raise error from exc

    context = JobContext(
        job_id=str(job.id), job_type=job.job_type, queue=job.queue, attempt=job.attempts,
        max_attempts=job.max_attempts, owner_id=job.owner_id, request_id=job.request_id,
    )
    try:
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
        raise

    duration = time.monotonic() - started
    if job_complete(job=job, result=result):
        logger.info("job completed in %.3f s", duration)
        signals.job_finished.send(sender=JobRecord, job=job, outcome="completed", duration=duration)
    else:
        logger.info("job finished but was cancelled meanwhile; result discarded")
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
