"""The one entry point for every job: start → validate → run → record the outcome.

RQ carries only the record id. Metrics hooks (queues.signals), log context and the retry policy
are applied here once for all job types. This is the only place that catches broad exceptions,
and it records them before re-raising (or, for the runtime, before returning the outcome).

Two ways in:
- `execute(job_id)`: RQ's job function (the forking `SlimyWorker`, `SlimySimpleWorker`); starts the
  record, runs the job (an `async def run` through asgiref on a private loop), records the outcome.
- `run_sync(job, …)` / `run_async(job, …)`: the worker runtime (queues.workers), which starts records
  in batches itself. They return an `Outcome`; a success is NOT recorded yet (the runtime records a batch
  of completions in one statement, then calls `job_completed`), everything else already is.

Only the current attempt records anything: every transition is conditional on the record being
`started` in this attempt, so a superseded attempt's outcome is discarded (see queues.services).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.db import close_old_connections
from opentelemetry.trace import Status, StatusCode
from rest_framework import serializers
from rq import Retry, get_current_job

from queues import signals
from queues.context import JobContext
from queues.definitions import (
    JobCancelled,
    JobDefinition,
    PermanentJobError,
    TransientJobError,
    registry,
)
from queues.logs import log_context
from queues.models import JobRecord
from queues.output import OutputRefused
from queues.services import job_attempt_failed, job_complete, job_start
from queues.tracing import job_span

logger = logging.getLogger("queues.runner")


class OutcomeKind(enum.Enum):
    SUCCEEDED = "succeeded"  # ran to the end; the result is not recorded yet (see job_completed)
    RETRYING = "retrying"  # recorded; push the record again (it waits `delay` seconds)
    FAILED = "failed"  # recorded: failed for good
    CANCELLED = "cancelled"  # the attempt was cancelled or superseded; nothing of it was recorded


@dataclass(frozen=True)
class Outcome:
    """What the runner made of one attempt (an explicit type instead of None | dict | Retry)."""

    kind: OutcomeKind
    result: Any = None
    duration: float = 0.0
    delay: float | None = None
    error: BaseException | None = None

    @property
    def retry(self) -> bool:
        return self.kind is OutcomeKind.RETRYING


def job_log_context(job: JobRecord):
    return log_context(job_id=str(job.id), job_type=job.job_type, queue=job.queue, request_id=job.request_id or None)


def execute(job_id: str):
    """RQ's job function. Returns RQ's `Retry` when the record waits for another attempt."""
    close_old_connections()
    rq_job = get_current_job()
    job = job_start(job_id=job_id, worker_name=(rq_job.worker_name or "") if rq_job else "inline")
    if job is None:
        # Cancelled, already finished, or being run by someone else: a duplicate delivery is harmless.
        logger.info("job %s is not waiting; skipped", job_id)
        return None
    with job_log_context(job):
        definition = registry.get(job.job_type)
        if definition is not None and definition.is_async():
            from asgiref.sync import async_to_sync

            # The coroutine runs on asgiref's loop thread; `context.run_db` comes back to this thread.
            outcome = async_to_sync(run_async)(job)
        else:
            outcome = run_sync(job)
        if outcome.kind is OutcomeKind.SUCCEEDED:
            job_completed(job, outcome.duration, job_complete(job=job, result=outcome.result))
            return {"status": job.status}
        if outcome.retry:
            # RQ reschedules this same job id after `delay`; the record already says `retrying`.
            return Retry(max=job.max_attempts, interval=max(math.ceil(outcome.delay or 1), 1))
        if outcome.kind is OutcomeKind.FAILED and outcome.error is not None:
            raise outcome.error
        return None


def job_completed(job: JobRecord, duration: float, completed: bool) -> None:
    """Log and signal a completion the caller recorded."""
    with job_log_context(job):
        if completed:
            logger.info("job completed in %.3f s", duration)
            signals.job_finished.send(sender=JobRecord, job=job, outcome="completed", duration=duration)
        else:
            logger.info("job finished but its attempt is no longer current; result discarded")


def _prepare(job: JobRecord, started: float, **context_extra):
    """(definition, payload, context), or the recorded Outcome of a job that cannot run at all."""
    due = job.scheduled_for or job.created_at
    assert job.started_at is not None  # job_start set it
    wait = max((job.started_at - due).total_seconds(), 0.0)
    signals.job_started.send(sender=JobRecord, job=job, wait=wait)
    logger.info("job started (attempt %s of %s)", job.attempts, job.max_attempts)
    definition = registry.get(job.job_type)
    if definition is None:
        exc = PermanentJobError(f"Unknown job type {job.job_type!r}.", code="unknown_job_type")
        return _failed(job, exc, permanent=True, started=started)
    try:
        payload = definition.validate_stored(job.payload)
    except serializers.ValidationError as exc:
        error = PermanentJobError(f"Invalid payload: {exc.detail}", code="invalid_payload")
        error.__cause__ = exc
        return _failed(job, error, permanent=True, started=started)
    context = JobContext(
        job_id=str(job.id),
        job_type=job.job_type,
        queue=job.queue,
        attempt=job.attempts,
        max_attempts=job.max_attempts,
        owner_id=job.owner_id,
        request_id=job.request_id,
        worker_name=job.worker_name,
        **context_extra,
    )
    return definition, payload, context


def run_sync(job: JobRecord, *, time_limit: Callable[[int], Any] | None = None, **context_extra) -> Outcome:
    """Run a started record's synchronous job in this thread; `time_limit(seconds)` wraps the run."""
    with job_span(job, job.attempts) as span:
        return _traced(span, _run_sync(job, time_limit, context_extra))


def _run_sync(job: JobRecord, time_limit, context_extra) -> Outcome:
    started = time.monotonic()
    prepared = _prepare(job, started, **context_extra)
    if isinstance(prepared, Outcome):
        return prepared
    definition, payload, context = prepared
    try:
        with time_limit(definition.timeout) if time_limit else contextlib.nullcontext():
            result = definition().run(payload, context)
    except BaseException as exc:  # recorded; the caller decides what else to do
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return _attempt_failed(job, definition, exc, started)
    return Outcome(OutcomeKind.SUCCEEDED, result=result, duration=time.monotonic() - started)


def _traced(span, outcome: Outcome) -> Outcome:
    """The attempt's outcome on its span (the runner records failures itself: nothing propagates)."""
    if span.is_recording():
        span.set_attribute("slimy.job.outcome", outcome.kind.value)
        if outcome.kind in (OutcomeKind.FAILED, OutcomeKind.RETRYING):
            if outcome.error is not None:
                span.record_exception(outcome.error)
            span.set_status(Status(StatusCode.ERROR, type(outcome.error).__name__ if outcome.error else "failed"))
    return outcome


async def run_async(job: JobRecord, *, db: Callable[..., Awaitable[Any]] | None = None, **context_extra) -> Outcome:
    """Run a started record's job as a coroutine, within its timeout; database work goes through `db`.

    `asyncio.CancelledError` (the runtime handing the job back at shutdown) is not recorded here: it
    propagates, and the caller hands the attempt to its retry policy.
    """
    # The span is current in this coroutine's context: the job's own calls (the LLM's) are its children.
    with job_span(job, job.attempts) as span:
        return _traced(span, await _run_async(job, db, context_extra))


async def _run_async(job: JobRecord, db, context_extra) -> Outcome:
    started = time.monotonic()

    async def call(fn, *args, **kwargs):
        if db is not None:
            return await db(fn, *args, **kwargs)
        from asgiref.sync import sync_to_async

        return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)

    prepared = await call(_prepare, job, started, db=db, **context_extra)
    if isinstance(prepared, Outcome):
        return prepared
    definition, payload, context = prepared
    try:
        async with asyncio.timeout(definition.timeout or None):
            if definition.is_async():
                result = await definition().run(payload, context)
            else:
                result = await call(definition().run, payload, context)
    except TimeoutError as exc:
        from rq.timeouts import JobTimeoutException

        error = JobTimeoutException(f"Task exceeded maximum timeout value ({definition.timeout} seconds)")
        error.__cause__ = exc
        return await call(_attempt_failed, job, definition, error, started)
    except Exception as exc:  # noqa: BLE001 - recorded, then returned as the outcome
        return await call(_attempt_failed, job, definition, exc, started)
    return Outcome(OutcomeKind.SUCCEEDED, result=result, duration=time.monotonic() - started)


def _attempt_failed(job: JobRecord, definition: type[JobDefinition], exc: BaseException, started: float) -> Outcome:
    if isinstance(exc, JobCancelled) or _superseded_output(exc):
        logger.info("attempt cancelled or superseded while running")
        # A no-op on the record when it is no longer started in this attempt; closes the attempt row.
        job_attempt_failed(job=job, exc=JobCancelled("cancelled"), permanent=True)
        return Outcome(OutcomeKind.CANCELLED, duration=time.monotonic() - started, error=exc)
    permanent = definition.is_permanent(exc)
    retry_after = exc.retry_after if isinstance(exc, TransientJobError) else None
    return _failed(job, exc, permanent=permanent, started=started, retry_after=retry_after)


def _superseded_output(exc: BaseException) -> bool:
    return isinstance(exc, OutputRefused)


def _failed(job, exc, *, permanent, started, retry_after=None) -> Outcome:
    duration = time.monotonic() - started
    delay = job_attempt_failed(job=job, exc=exc, permanent=permanent, retry_after=retry_after)
    if delay is not None:
        logger.warning("attempt %s failed (%s); retrying in %.1f s", job.attempts, exc, delay)
        signals.job_finished.send(sender=JobRecord, job=job, outcome="retried", duration=duration)
        return Outcome(OutcomeKind.RETRYING, duration=duration, delay=delay, error=exc)
    if job.status == "failed":
        logger.error("job failed after %s attempt(s): %s", job.attempts, exc)
        signals.job_finished.send(sender=JobRecord, job=job, outcome="failed", duration=duration)
        return Outcome(OutcomeKind.FAILED, duration=duration, error=exc)
    # The record was no longer started in this attempt (cancelled or superseded): nothing was recorded.
    return Outcome(OutcomeKind.CANCELLED, duration=duration, error=exc)
