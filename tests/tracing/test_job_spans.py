"""The job span opened by the worker itself (queues.runner, every kind of job) and by the runtime process
(tracing_setup at start-up): a child of the submission's span, the LLM call a child of it, no prompt text."""

import json
import subprocess
import sys
import threading
from http.server import ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue
from slimy_site.tracing import get_tracer, tracing_setup, tracing_shutdown
from tests.fake_llm import Behaviour, FakeLLM
from tests.processes import ROOT, process_env
from tests.tracing.test_tracing import _Collector

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_PROMPT = "purple-elephant-7431 tell me a secret"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert tracing_setup(role="test", exporter=exporter, set_global=False)
    yield exporter
    tracing_shutdown()


@pytest.fixture
def llm(settings):
    fake = FakeLLM().start()
    fake.always(Behaviour(text="a secret answer"))
    settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.OPENAI_TIMEOUT = fake.api_key, fake.base_url, 5.0
    yield fake
    fake.stop()


def _runs(exporter):
    return [s for s in exporter.get_finished_spans() if s.name.startswith("job.run")]


def test_the_worker_runs_the_chat_reply_inside_a_child_of_the_submission(spans, llm, user, make_api_client, run_worker):
    response = make_api_client(user).post("/api/chat/bot", {"prompt": SECRET_PROMPT, "guildId": "g-9"}, format="json")
    assert response.status_code == 202
    http_span = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER)
    run_worker(["chat"])
    assert JobRecord.objects.get(pk=response.json()["jobId"]).status == JobStatus.COMPLETED
    [run] = _runs(spans)
    assert run.context.trace_id == http_span.context.trace_id
    assert run.parent.span_id == http_span.context.span_id
    assert run.attributes["slimy.job.id"] == response.json()["jobId"]
    assert run.attributes["slimy.tenant"] == "g-9" and run.attributes["slimy.job.attempt"] == 1
    assert run.attributes["slimy.job.outcome"] == "succeeded"
    llm_calls = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT and s.name.startswith("POST")]
    assert len(llm_calls) == 1 and llm_calls[0].parent.span_id == run.context.span_id
    everything = json.dumps([dict(s.attributes) for s in spans.get_finished_spans()], default=str)
    assert "purple-elephant" not in everything


def test_a_synchronous_job_and_its_failed_attempt_are_traced_too(spans, user, run_worker):
    with get_tracer("test").start_as_current_span("submit") as submit:
        ok = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user)
        bad = job_enqueue(job_type="test_permanent", payload={"tag": "t"}, owner=user)
    run_worker()
    runs = {s.attributes["slimy.job.id"]: s for s in _runs(spans)}
    assert {str(ok.pk), str(bad.pk)} <= set(runs)
    for job in (ok, bad):
        assert runs[str(job.pk)].parent.span_id == submit.get_span_context().span_id
    assert runs[str(ok.pk)].status.status_code == StatusCode.UNSET
    assert runs[str(bad.pk)].status.status_code == StatusCode.ERROR
    assert runs[str(bad.pk)].attributes["slimy.job.outcome"] == "failed"


def test_the_runtime_process_exports_the_job_span_under_the_submission(spans, llm, user, make_api_client, redis_server):
    """A real `manage.py rqworker` (the worker runtime) sets tracing up itself from the OTLP setting."""
    received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Collector,), {"received": received}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        response = make_api_client(user).post("/api/chat/bot", {"prompt": SECRET_PROMPT}, format="json")
        http_span = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER)
        env = process_env(
            redis_server.url,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.server_address[1]}",
            OPENAI_API_KEY=llm.api_key,
            OPENAI_BASE_URL=llm.base_url,
            WORKER_RECONCILER="false",
        )
        done = subprocess.run(
            [sys.executable, "manage.py", "rqworker", "chat", "--burst"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        server.shutdown()
        server.server_close()
    assert JobRecord.objects.get(pk=response.json()["jobId"]).status == JobStatus.COMPLETED
    exported = []
    for path, _type, body in received:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        exported += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    [run] = [s for s in exported if s.name == "job.run chat_bot_interaction"]
    assert run.trace_id == http_span.context.trace_id.to_bytes(16, "big")
    assert run.parent_span_id == http_span.context.span_id.to_bytes(8, "big")
    llm_call = [s for s in exported if s.name.startswith("POST") and s.parent_span_id == run.span_id]
    assert len(llm_call) == 1
    assert b"purple-elephant" not in b"".join(body for _, _, body in received)
