"""OpenTelemetry, configured in one place and only when asked.

`tracing_setup(role=...)` is called by the process entry points (wsgi/asgi, the worker command), never at
import time. Without OTEL_EXPORTER_OTLP_ENDPOINT (and without a test exporter) it does nothing: no
provider, no instrumentation, and the API's no-op tracer makes every span call free. With it, spans of
Django requests, psycopg queries, Redis commands and httpx2 calls (the OpenAI client) are exported by OTLP
over HTTP, batched off the request path.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from opentelemetry import trace

logger = logging.getLogger(__name__)

_state: dict = {"provider": None, "instrumentors": []}


def tracing_enabled() -> bool:
    return _state["provider"] is not None


def tracing_setup(*, role: str, exporter=None, set_global: bool = True) -> bool:
    """Configure tracing for this process; True when spans are recorded.

    `exporter` (an SDK SpanExporter) replaces OTLP, exported synchronously: tests pass an in-memory one.
    `set_global=False` keeps the provider out of the API's global slot (which can be set once per process)
    so a test can tear it down again with tracing_shutdown().
    """
    if _state["provider"] is not None:
        return True
    endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT
    if exporter is None and not endpoint:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": settings.OTEL_SERVICE_NAME, "slimy.role": role})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(endpoint))))
    if set_global:
        trace.set_tracer_provider(provider)
    _state["provider"] = provider
    _state["instrumentors"] = _instrument(provider)
    logger.info("tracing on for %s (%s)", role, "test exporter" if exporter is not None else endpoint)
    return True


def _traces_url(endpoint: str) -> str:
    # OTEL_EXPORTER_OTLP_ENDPOINT is the collector's base URL; the HTTP exporter posts to <base>/v1/traces.
    return endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"


def _instrument(provider) -> list:
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    # The openai package talks HTTP through httpx2 (httpx's successor): that is the client to trace.
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    done = []
    instrumentors: tuple[tuple[Any, dict[str, Any]], ...] = (
        (DjangoInstrumentor(), {}),
        # enable_commenter off: SQL text stays as written (query plans and pg_stat_statements group it)
        (PsycopgInstrumentor(), {"enable_commenter": False, "skip_dep_check": True}),
        (RedisInstrumentor(), {}),
        (HTTPX2ClientInstrumentor(), {}),
    )
    for instrumentor, options in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=provider, **options)
            done.append(instrumentor)
    return done


def tracing_shutdown() -> None:
    """Flush and undo tracing_setup (tests; a process exiting flushes through the SDK's atexit hook)."""
    provider = _state["provider"]
    for instrumentor in _state["instrumentors"]:
        instrumentor.uninstrument()
    _state.update(provider=None, instrumentors=[])
    if provider is not None:
        provider.shutdown()


def tracing_active() -> bool:
    """Whether a span can record at all: our provider, or one installed globally by someone else."""
    return _state["provider"] is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def get_tracer(name: str):
    """A tracer from our provider when tracing is on, else the API's (no-op unless someone set one)."""
    provider = _state["provider"]
    return provider.get_tracer(name) if provider is not None else trace.get_tracer(name)
