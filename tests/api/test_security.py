"""The API's safety rails, one test per rule (see also test_auth, test_idempotency, test_fuzz)."""

import json
import logging
import os
import subprocess
import sys

import pytest
from rest_framework.test import APIClient

from queues.logs import ContextFilter
from queues.models import JobRecord
from queues.services import job_enqueue
from tests.redis_server import free_port

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.urls")]
# Tests that need on-commit pushes to Redis (backlog) or a worker run with transaction=True.
on_commit = pytest.mark.django_db(transaction=True)

ECHO = "/api/test/echo"


def _assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["ok"] is False and body["error"] == code and isinstance(body["message"], str)
    assert set(body) <= {"ok", "error", "message", "details"}
    assert response["X-Request-ID"]
    return body


# --- Object-level access: another user's job is a 404 on every job endpoint.


@pytest.mark.parametrize("method, suffix", [("get", ""), ("post", "/retry"), ("post", "/cancel")])
def test_another_users_job_is_404_on_every_job_endpoint(member, other_member, make_api_client, method, suffix):
    job = job_enqueue(job_type="test_permanent", payload={"tag": "x"}, owner=other_member)
    JobRecord.objects.filter(pk=job.pk).update(status="failed")
    response = getattr(make_api_client(member), method)(f"/api/jobs/{job.id}{suffix}")
    _assert_error(response, 404, "job_not_found")
    missing = getattr(make_api_client(member), method)(f"/api/jobs/0c6a1bde-0000-4000-8000-000000000000{suffix}")
    assert missing.json() == response.json()  # a foreign id and a missing one look the same
    assert JobRecord.objects.get(pk=job.pk).status == "failed"


@pytest.mark.parametrize("job_id", ["not-a-uuid", "1", "%00", "' OR 1=1 --"])
def test_malformed_job_ids_are_404(member, make_api_client, job_id):
    _assert_error(make_api_client(member).get(f"/api/jobs/{job_id}"), 404, "job_not_found")


# --- Unknown fields and job-option injection.


def test_clients_cannot_set_job_options(member, make_api_client):
    body = {
        "value": "x",
        "attempts": 9,
        "max_attempts": 1,
        "timeout": 1,
        "queue": "chat",
        "jobId": "0c6a1bde-0000-4000-8000-000000000000",
        "job_type": "test_sleep",
    }
    error = _assert_error(make_api_client(member).post(ECHO, body, format="json"), 400, "validation_error")
    assert error["details"] == {k: ["Unknown field."] for k in body if k != "value"}
    assert JobRecord.objects.count() == 0


@pytest.mark.parametrize("suffix", ["/retry", "/cancel"])
def test_action_endpoints_refuse_any_body_field(member, make_api_client, suffix):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member)
    response = make_api_client(member).post(f"/api/jobs/{job.id}{suffix}", {"attempts": 10}, format="json")
    assert _assert_error(response, 400, "validation_error")["details"] == {"attempts": ["Unknown field."]}


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"priority": "urgent"}, "priority"),
        ({"delay": 10**9}, "delay"),
        ({"delay": -1}, "delay"),
        ({"count": 11}, "count"),
    ],
)
def test_priority_and_delay_only_within_limits(member, make_api_client, extra, field):
    response = make_api_client(member).post(ECHO, {"value": "x", **extra}, format="json")
    assert field in _assert_error(response, 400, "validation_error")["details"]


def test_offered_priority_and_delay_are_applied(member, make_api_client):
    response = make_api_client(member).post(ECHO, {"value": "x", "priority": "high", "delay": 60}, format="json")
    assert response.status_code == 202 and response.json()["status"] == "scheduled"
    record = JobRecord.objects.get(pk=response.json()["jobId"])
    assert record.priority == "high" and record.scheduled_for is not None


# --- Body size.


def test_oversized_body_is_413_before_anything_runs(member, make_api_client, settings):
    settings.API_MAX_BODY_BYTES = 1024
    response = make_api_client(member).post(ECHO, {"value": "x", "pad": "y" * 2000}, format="json")
    body = _assert_error(response, 413, "payload_too_large")
    assert body["details"]["maxBytes"] == 1024
    assert JobRecord.objects.count() == 0
    assert make_api_client(member).post(ECHO, {"value": "y" * 100}, format="json").status_code == 202


def test_default_body_limit_is_64_kib(member, make_api_client):
    response = make_api_client(member).post(ECHO, {"value": "x", "pad": "y" * 65536}, format="json")
    _assert_error(response, 413, "payload_too_large")


# --- Rate limits, shared through Redis.


def test_rate_limit_holds_across_two_clients_of_one_user(member, other_member, make_api_client, settings):
    settings.API_RATE_LIMITS = {"submit": "3/min"}
    token_client = make_api_client(member)
    session_client = APIClient()
    session_client.force_login(member)
    assert [token_client.post(ECHO, {"value": f"t{i}"}, format="json").status_code for i in range(2)] == [202, 202]
    assert session_client.post(ECHO, {"value": "s"}, format="json").status_code == 202
    refused = token_client.post(ECHO, {"value": "over"}, format="json")
    body = _assert_error(refused, 429, "rate_limited")
    assert body["details"]["scope"] == "submit"
    assert 1 <= int(refused["Retry-After"]) <= 60
    _assert_error(session_client.post(ECHO, {"value": "over"}, format="json"), 429, "rate_limited")
    assert JobRecord.objects.count() == 3
    # Another user has a bucket of their own; reads have theirs.
    assert make_api_client(other_member).post(ECHO, {"value": "o"}, format="json").status_code == 202
    assert token_client.get("/api/jobs").status_code == 200


def test_rate_limit_is_shared_with_another_process(member, make_api_client, settings, redis_server):
    settings.API_RATE_LIMITS = {"read": "2/min"}
    code = (
        "import django; django.setup()\n"
        "from queues.api.throttling import Rate, rate_limit_hit\n"
        f"print([rate_limit_hit(scope='read', ident='user:{member.pk}', rate=Rate(2, 60)) for _ in range(2)])\n"
    )
    env = {**os.environ, "REDIS_URL": redis_server.url, "DJANGO_SETTINGS_MODULE": "slimy_site.settings"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[0.0, 0.0]"  # the other process spent this user's two reads
    _assert_error(make_api_client(member).get("/api/me"), 429, "rate_limited")


# --- Backpressure and Redis outages.


@on_commit
def test_full_queue_refuses_submissions_with_retry_after(member, make_api_client, settings):
    settings.QUEUE_MAX_BACKLOG = 2
    client = make_api_client(member)
    assert [client.post(ECHO, {"value": f"v{i}"}, format="json").status_code for i in range(3)] == [202] * 3
    refused = client.post(ECHO, {"value": "one too many"}, format="json")
    assert _assert_error(refused, 503, "queue_full")["details"] == {"queue": "database"}
    assert int(refused["Retry-After"]) > 0
    assert JobRecord.objects.count() == 3


@on_commit
def test_full_queue_still_replays_idempotent_requests(member, make_api_client, settings):
    client = make_api_client(member)
    first = client.post(ECHO, {"value": "k"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    settings.QUEUE_MAX_BACKLOG = 0
    _assert_error(client.post(ECHO, {"value": "new"}, format="json"), 503, "queue_full")
    again = client.post(ECHO, {"value": "k"}, format="json", HTTP_IDEMPOTENCY_KEY="key-1")
    assert again.status_code == 200 and again.json() == first.json()


def test_redis_down_refuses_submissions_at_once_but_reads_work(member, make_api_client, settings):
    job = job_enqueue(job_type="test_permanent", payload={"tag": "x"}, owner=member)
    JobRecord.objects.filter(pk=job.pk).update(status="failed")
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    client = make_api_client(member)
    refused = client.post(ECHO, {"value": "x"}, format="json")
    assert _assert_error(refused, 503, "queues_unavailable")
    assert refused["Retry-After"]
    _assert_error(client.post(f"/api/jobs/{job.id}/retry"), 503, "queues_unavailable")
    assert client.get(f"/api/jobs/{job.id}").json()["status"] == "failed"
    assert client.get("/api/jobs").status_code == 200
    assert JobRecord.objects.count() == 1


# --- One error shape everywhere.


def test_unknown_api_urls_are_404_in_the_error_shape(member, make_api_client):
    _assert_error(make_api_client(member).get("/api/no/such/thing"), 404, "not_found")
    _assert_error(APIClient().get("/api/no/such/thing"), 404, "not_found")


def test_wrong_method_is_405_with_allow(member, make_api_client):
    response = make_api_client(member).put("/api/jobs", {}, format="json")
    _assert_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


def test_non_json_body_is_415(member, make_api_client):
    response = make_api_client(member).post(ECHO, "value=x", content_type="application/x-www-form-urlencoded")
    _assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"value": "x"',
        b"\xff\xfe",
        b'{"value": NaN}',
        b'{"value": 1e999}',
        b'{"value": "a\\u0000b"}',
        b'{"value": "\\ud800"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"\\u0000": 1}',
    ],
)
def test_malformed_or_unstorable_json_is_400(member, make_api_client, raw):
    response = make_api_client(member).generic("POST", ECHO, raw, content_type="application/json")
    _assert_error(response, 400, "malformed_request")
    assert JobRecord.objects.count() == 0


def test_server_errors_carry_no_internals(member, make_api_client):
    body = _assert_error(make_api_client(member).get("/api/test/boom"), 500, "internal_error")
    assert "secret" not in json.dumps(body)
    client = make_api_client(member)
    client.raise_request_exception = False
    response = client.get("/api/test/plain-boom")
    assert "secret" not in response.content.decode()
    _assert_error(response, 500, "internal_error")


def test_request_id_is_echoed_or_generated(member, make_api_client):
    client = make_api_client(member)
    assert client.get("/api/me", HTTP_X_REQUEST_ID="trace-0001-abcd")["X-Request-ID"] == "trace-0001-abcd"
    generated = client.get("/api/me", HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"]
    assert generated != "bad id with spaces" and len(generated) == 32


@on_commit
def test_request_id_reaches_every_log_line_of_the_request_and_its_job(member, make_api_client, run_worker, caplog):
    caplog.handler.addFilter(ContextFilter())  # what the configured log handlers do
    caplog.set_level(logging.INFO)
    response = make_api_client(member).post(
        ECHO, {"value": "traced"}, format="json", HTTP_X_REQUEST_ID="trace-req-42424242"
    )
    job_id = response.json()["jobId"]
    request_lines = [r for r in caplog.records if r.name == "queues.api.submit"]
    assert request_lines and {r.request_id for r in request_lines} == {"trace-req-42424242"}
    caplog.clear()
    run_worker()
    job_lines = [r for r in caplog.records if r.job_id == job_id]
    messages = [r.getMessage() for r in job_lines]
    assert any(m.startswith("job started") for m in messages), messages
    assert any(m.startswith("job completed") for m in messages), messages
    assert {r.request_id for r in job_lines} == {"trace-req-42424242"}
    assert JobRecord.objects.get(pk=job_id).request_id == "trace-req-42424242"


# --- The JSON parser decodes UTF-8 only: codec "charsets" (bz2, zlib, hex, rot13) never run.


@pytest.mark.parametrize("charset", ["bz2_codec", "zlib_codec", "hex_codec", "rot13", "latin-1", "utf-16"])
def test_non_utf8_charsets_are_refused_before_decoding(member, make_api_client, no_limits, charset):
    import bz2

    # 75 bytes of bz2 that would expand to a 10 MB document if the codec ran.
    body = bz2.compress(json.dumps({"value": "x" * 10_000_000}).encode())
    response = make_api_client(member).generic("POST", ECHO, body, content_type=f"application/json; charset={charset}")
    _assert_error(response, 415, "unsupported_media_type")
    assert not JobRecord.objects.exists()


@pytest.mark.parametrize("charset", ["utf-8", "UTF8", '"utf-8"'])
def test_utf8_charset_spellings_are_accepted(member, make_api_client, no_limits, charset):
    response = make_api_client(member).generic(
        "POST", ECHO, json.dumps({"value": "ü"}).encode(), content_type=f"application/json; charset={charset}"
    )
    assert response.status_code == 202, response.content


def test_invalid_utf8_bytes_are_a_400(member, make_api_client, no_limits):
    response = make_api_client(member).generic("POST", ECHO, b'{"value": "\xff"}', content_type="application/json")
    _assert_error(response, 400, "malformed_request")
