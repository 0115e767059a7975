"""Request ids: on every log line of the request, stored on its job, on the worker's lines for the job."""

import json
import logging

import pytest

from queues.constants import JobStatus
from queues.logs import ContextFilter, JsonFormatter
from queues.models import JobRecord
from tests.metrics.conftest import stop_worker, wait_for


class _Lines(logging.Handler):
    """A handler formatted like production: the context filter, then JSON."""

    def __init__(self):
        super().__init__()
        self.lines = []
        self.addFilter(ContextFilter())
        self.setFormatter(JsonFormatter())

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines():
    handler = _Lines()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler.lines
    root.removeHandler(handler)


@pytest.mark.e2e
@pytest.mark.urls("tests.metrics.urls")
@pytest.mark.django_db(transaction=True)
def test_request_id_follows_the_job_into_the_worker_and_its_retry(make_api_client, user, start_worker, log_lines):
    request_id = "req-corr-12345678"
    response = make_api_client(user).post("/test/flaky-jobs", {}, format="json", HTTP_X_REQUEST_ID=request_id)
    assert response.status_code == 202
    assert response["X-Request-ID"] == request_id
    job_id = response.json()["jobId"]
    assert JobRecord.objects.get(pk=job_id).request_id == request_id
    access = [line for line in log_lines if line["logger"] == "slimy.access"]
    assert access and access[-1]["request_id"] == request_id
    assert access[-1]["status"] == 202 and access[-1]["path"] == "/test/flaky-jobs"

    worker = start_worker("database")
    wait_for(
        lambda: JobRecord.objects.get(pk=job_id).status == JobStatus.COMPLETED,
        timeout=30,
        message="the flaky job to complete on its second attempt",
    )
    output = stop_worker(worker)

    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert len(lines) == len([line for line in output.splitlines() if line.strip()]), "every line is JSON"
    for_job = [line for line in lines if line.get("job_id") == job_id]
    assert for_job and all(line.get("request_id") == request_id for line in for_job)
    messages = [line["message"] for line in for_job]
    assert any(m.startswith("job started (attempt 1 of 3)") for m in messages)
    assert any(m.startswith("attempt 1 failed") for m in messages)
    assert any(m.startswith("job started (attempt 2 of 3)") for m in messages)
    assert any(m.startswith("job completed") for m in messages)
    # grep on the request id finds the same lines
    assert [line for line in lines if line.get("request_id") == request_id] == for_job


@pytest.mark.django_db
def test_django_request_warnings_carry_the_request_id(client, log_lines):
    response = client.get("/no-such-page", HTTP_X_REQUEST_ID="req-404-abcdefgh")
    assert response.status_code == 404
    warnings = [line for line in log_lines if line["logger"] == "django.request"]
    assert warnings and warnings[-1]["request_id"] == "req-404-abcdefgh"
    access = [line for line in log_lines if line["logger"] == "slimy.access"]
    assert access[-1]["request_id"] == "req-404-abcdefgh" and access[-1]["status"] == 404


def test_text_format_carries_the_request_id():
    from django.conf import settings

    from queues.logs import log_context

    formatter = logging.Formatter(settings.LOGGING["formatters"]["text"]["format"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    with log_context(request_id="req-text-1234"):
        ContextFilter().filter(record)
    assert "[req=req-text-1234 job=-] hello" in formatter.format(record)
