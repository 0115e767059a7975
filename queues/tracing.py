"""Trace context across the web → worker boundary, carried in the job record.

At enqueue, job_trace_context_capture() stores the current W3C trace context (traceparent, tracestate)
in JobRecord.trace_context; the runner wraps each attempt in job_span(record, attempt), a child of the
submission's span. With tracing off both cost a dictionary: no span is recording, nothing is injected.
Attributes name the job, never its payload (prompts stay out of traces).
"""

from __future__ import annotations

import datetime as dt
from contextlib import contextmanager

from opentelemetry import propagate
from opentelemetry.trace import INVALID_SPAN, SpanKind

from slimy_site.tracing import get_tracer, tracing_active

TRACER = "slimy.queues"


def job_trace_context_capture() -> dict:
    """The caller's trace context as a carrier dict ({} when no span is recording)."""
    carrier: dict = {}
    propagate.inject(carrier)
    return carrier


def _ns(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1e9)


def job_span_attributes(record, attempt: int) -> dict:
    return {
        "slimy.job.id": str(record.id),
        "slimy.job.type": record.job_type,
        "slimy.job.queue": record.queue,
        "slimy.job.attempt": attempt,
        "slimy.tenant": record.tenant or "",
        "messaging.system": "slimy",
        "messaging.destination.name": record.queue,
        "messaging.message.id": str(record.id),
    }


@contextmanager
def job_span(record, attempt: int, *, waited_since: dt.datetime | None = None):
    """The span of one attempt, child of the span that enqueued the job (when it was traced).

    `waited_since` (default: when the record was created, for the first attempt) adds a `job.wait` span
    covering the queue wait, so the trace shows wait and run side by side. Exceptions are recorded on the
    span and re-raised.
    """
    if not tracing_active():
        # Nothing would record: skip building the spans (a short job costs less than they do).
        yield INVALID_SPAN
        return
    tracer = get_tracer(TRACER)
    parent = propagate.extract(record.trace_context or {})
    attributes = job_span_attributes(record, attempt)
    if waited_since is None and attempt == 1:
        waited_since = getattr(record, "scheduled_for", None) or getattr(record, "created_at", None)
    if waited_since is not None:
        now_ns = _ns(dt.datetime.now(dt.UTC))
        start_ns = min(_ns(waited_since), now_ns)
        wait = tracer.start_span(
            "job.wait", context=parent, kind=SpanKind.INTERNAL, attributes=attributes, start_time=start_ns
        )
        wait.end(end_time=now_ns)
    with tracer.start_as_current_span(
        f"job.run {record.job_type}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as span:
        yield span
