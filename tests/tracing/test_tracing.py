"""Tracing: off by default, one trace from the HTTP submission to the job's attempt, no prompt text."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from queues.models import JobRecord
from queues.services import job_enqueue
from queues.tracing import job_span, job_trace_context_capture
from slimy_site.tracing import get_tracer, tracing_enabled, tracing_setup, tracing_shutdown
from tests.processes import ROOT, process_env

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_PROMPT = "purple-elephant-7431 tell me a secret"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    assert tracing_setup(role="test", exporter=exporter, set_global=False)
    yield exporter
    tracing_shutdown()


def test_off_without_an_endpoint_costs_nothing(settings, user):
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = ""
    assert tracing_setup(role="web") is False and not tracing_enabled()
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user)
    assert JobRecord.objects.get(pk=job.pk).trace_context == {}
    with job_span(job, 1) as span:
        assert not span.is_recording()


def test_http_submission_span_is_the_parent_of_the_job_span_across_the_record(spans, user, make_api_client):
    response = make_api_client(user).post("/api/chat/bot", {"prompt": SECRET_PROMPT, "guildId": "g-1"}, format="json")
    assert response.status_code == 202
    server = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(server) == 1 and server[0].attributes.get("http.route", "").endswith("bot")
    http_span = server[0]

    # The worker side knows only the record read back from the database.
    record = JobRecord.objects.get(pk=response.json()["jobId"])
    assert record.trace_context["traceparent"].split("-")[1] == format(http_span.context.trace_id, "032x")
    spans.clear()
    with job_span(record, 2, waited_since=record.created_at):
        with get_tracer("test").start_as_current_span("llm call"):
            pass
    finished = {s.name: s for s in spans.get_finished_spans()}
    run, wait, inner = finished["job.run chat_bot_interaction"], finished["job.wait"], finished["llm call"]
    for span in (run, wait):
        assert span.context.trace_id == http_span.context.trace_id
        assert span.parent.span_id == http_span.context.span_id
    assert inner.parent.span_id == run.context.span_id
    assert run.kind == SpanKind.CONSUMER
    assert wait.start_time <= wait.end_time <= run.start_time
    assert {
        k: run.attributes[k]
        for k in ("slimy.job.id", "slimy.job.type", "slimy.job.queue", "slimy.job.attempt", "slimy.tenant")
    } == {
        "slimy.job.id": str(record.pk),
        "slimy.job.type": "chat_bot_interaction",
        "slimy.job.queue": "chat",
        "slimy.job.attempt": 2,
        "slimy.tenant": record.tenant,
    }


def test_no_span_carries_prompt_text(spans, user, make_api_client):
    response = make_api_client(user).post("/api/chat/bot", {"prompt": SECRET_PROMPT}, format="json")
    record = JobRecord.objects.get(pk=response.json()["jobId"])
    with job_span(record, 1):
        pass
    finished = spans.get_finished_spans()
    assert len(finished) >= 3  # request, wait, run (plus database and Redis spans)
    for span in finished:
        assert "purple-elephant" not in json.dumps(dict(span.attributes), default=str), span.name
        assert "purple-elephant" not in span.name


def test_database_and_redis_calls_of_the_request_are_children(spans, user, make_api_client):
    make_api_client(user).post("/api/chat/bot", {"prompt": "hello"}, format="json")
    finished = spans.get_finished_spans()
    http_span = next(s for s in finished if s.kind == SpanKind.SERVER)
    clients = [s for s in finished if s.kind == SpanKind.CLIENT and s.context.trace_id == http_span.context.trace_id]
    systems = {s.attributes.get("db.system") or s.attributes.get("db.system.name") for s in clients}
    assert {"postgresql", "redis"} <= systems


def test_job_span_records_the_error_and_reraises(spans, user):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user)
    with pytest.raises(RuntimeError):
        with job_span(job, 1):
            raise RuntimeError("boom")
    run = next(s for s in spans.get_finished_spans() if s.name.startswith("job.run"))
    assert not run.status.is_ok and run.events[0].name == "exception"


def test_job_without_trace_context_starts_its_own_trace(spans, user):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user)
    assert job.trace_context == {}  # enqueued outside any span
    with job_span(job, 1):
        pass
    run = next(s for s in spans.get_finished_spans() if s.name.startswith("job.run"))
    assert run.parent is None


def test_capture_inside_a_span(spans):
    with get_tracer("test").start_as_current_span("outer") as outer:
        carrier = job_trace_context_capture()
    version, trace_id, span_id, _flags = carrier["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{outer.get_span_context().trace_id:032x}",
        f"{outer.get_span_context().span_id:016x}",
    )


def test_llm_call_inside_the_job_span_is_its_child(spans, user):
    import openai

    from tests.fake_llm import FakeLLM

    fake = FakeLLM().start()
    try:
        job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user)
        with job_span(job, 1) as run:
            client = openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": SECRET_PROMPT}])
    finally:
        fake.stop()
    http = [s for s in spans.get_finished_spans() if s.kind == SpanKind.CLIENT and s.name.startswith("POST")]
    assert len(http) == 1 and http[0].parent.span_id == run.get_span_context().span_id
    assert "purple-elephant" not in json.dumps(dict(http[0].attributes), default=str)
    # the provider received the trace context, so its own spans (if any) would join this trace
    assert fake.completion_requests[0].headers["traceparent"].split("-")[1] == f"{run.get_span_context().trace_id:032x}"


def test_worker_process_continues_the_trace_from_the_record(spans, user, make_api_client, redis_server):
    """The web → worker boundary for real: another process reads the record and opens the job span."""
    response = make_api_client(user).post("/api/chat/bot", {"prompt": "hi"}, format="json")
    http_span = next(s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER)
    script = (
        "import json\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from slimy_site.tracing import tracing_setup\n"
        "from queues.models import JobRecord\n"
        "from queues.tracing import job_span\n"
        "exporter = InMemorySpanExporter()\n"
        "tracing_setup(role='worker', exporter=exporter)\n"
        f"record = JobRecord.objects.get(pk='{response.json()['jobId']}')\n"
        "with job_span(record, 1):\n"
        "    pass\n"
        "run = [s for s in exporter.get_finished_spans() if s.name.startswith('job.run')][0]\n"
        "print(json.dumps({'trace': run.context.trace_id, 'parent': run.parent.span_id,"
        " 'attempt': run.attributes['slimy.job.attempt']}))\n"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=process_env(redis_server.url),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"trace": http_span.context.trace_id, "parent": http_span.context.span_id, "attempt": 1}


class _Collector(BaseHTTPRequestHandler):
    received: list

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_otlp_endpoint_setting_exports_over_http(settings):
    received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Collector,), {"received": received}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.OTEL_EXPORTER_OTLP_ENDPOINT = f"http://127.0.0.1:{server.server_address[1]}"
        assert tracing_setup(role="worker", set_global=False)
        with get_tracer("test").start_as_current_span("exported-span"):
            pass
        tracing_shutdown()  # flushes the batch
    finally:
        server.shutdown()
        server.server_close()
    assert received and received[0][0] == "/v1/traces"
    assert received[0][1] == "application/x-protobuf" and b"exported-span" in received[0][2]
