"""The quick path of a plain submission (queues.api.quick_submit) answers as DRF's dispatch does, and
sends everything that is not plain to DRF before anything is charged or written."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.views import APIView

from queues.connections import get_connection
from queues.models import JobRecord
from tests.redis_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/chat/conversations"


@pytest.fixture
def drf_dispatches(monkeypatch):
    """Counts the requests DRF's dispatch serves."""
    seen = []
    original = APIView.dispatch

    def dispatch(self, request, *args, **kwargs):
        seen.append(request.method)
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(APIView, "dispatch", dispatch)
    return seen


def _job_columns(job_id) -> dict:
    record = JobRecord.objects.get(pk=job_id)
    return {
        f.attname: getattr(record, f.attname)
        for f in JobRecord._meta.concrete_fields
        if f.attname not in ("id", "created_at", "updated_at", "request_id")
    }


def test_a_plain_submission_skips_drf_and_answers_as_drf_does(member, make_api_client, drf_dispatches):
    client = make_api_client(member)
    quick = client.post(URL, {"title": " Trip ", "personalityMode": "casual"}, format="json")
    assert drf_dispatches == []  # answered without DRF's dispatch
    # The same request made not plain (an Accept header DRF negotiates) goes through DRF.
    slow = client.post(
        URL, {"title": " Trip ", "personalityMode": "casual"}, format="json", HTTP_ACCEPT="application/json"
    )
    assert drf_dispatches == ["POST"]
    assert quick.status_code == slow.status_code == 202
    for answer in (quick, slow):
        body = answer.json()
        assert set(body) == {"ok", "jobId", "status", "statusUrl"} and body["status"] == "queued"
        assert body["statusUrl"] == f"http://testserver/api/jobs/{body['jobId']}"
        assert answer["Content-Type"] == "application/json"
        assert answer["X-Request-ID"]
    assert quick["Allow"] == slow["Allow"] == "GET, POST, HEAD, OPTIONS"
    assert _job_columns(quick.json()["jobId"]) == _job_columns(slow.json()["jobId"])
    assert _job_columns(quick.json()["jobId"])["payload"] == {"title": "Trip", "personality_mode": "casual"}
    # Pushed: both ids wait in the database queue's list.
    waiting = {i.decode() for i in get_connection().lrange("rq:queue:database", 0, -1)}
    assert {quick.json()["jobId"], slow.json()["jobId"]} <= waiting


def test_the_request_id_and_the_owner_reach_the_record(member, make_api_client):
    answer = make_api_client(member).post(URL, {}, format="json", HTTP_X_REQUEST_ID="quick-req-0001")
    assert answer.status_code == 202 and answer["X-Request-ID"] == "quick-req-0001"
    record = JobRecord.objects.get(pk=answer.json()["jobId"])
    assert record.request_id == "quick-req-0001" and record.owner_id == member.pk


@pytest.mark.parametrize(
    "extra, body",
    [
        ({"HTTP_IDEMPOTENCY_KEY": "quick-key-1"}, {"title": "t"}),  # a key: looked up by accept_job
        ({}, {"title": 0}),  # not plainly valid: the serializer words the error
        ({}, {"title": "t", "unknown": 1}),
        ({"HTTP_ACCEPT": "application/json"}, {"title": "t"}),
    ],
)
def test_requests_that_are_not_plain_go_to_drf(member, make_api_client, drf_dispatches, extra, body):
    make_api_client(member).post(URL, body, format="json", **extra)
    assert drf_dispatches == ["POST"]


def test_refusals_before_the_guard_are_drfs_and_charge_nothing_twice(
    member, make_api_client, django_user_model, settings, drf_dispatches
):
    settings.API_RATE_LIMITS = {"submit": "100/min", "write": "2/min", "read": "100/min"}
    client = make_api_client(member)
    answers = [client.post(URL, {"title": 0}, format="json") for _ in range(3)]
    assert [a.status_code for a in answers] == [400, 400, 429]  # one write charge per request, as before
    assert answers[0].json()["error"] == "validation_error" and "title" in answers[0].json()["details"]
    roleless = django_user_model.objects.create_user(username="quick-none", password="pw-quick-none-1")
    denied = make_api_client(roleless).post(URL, {"title": "t"}, format="json")
    assert denied.status_code == 403 and denied.json()["error"] == "permission_denied"
    unknown = make_api_client().post(URL, {"title": "t"}, format="json", HTTP_AUTHORIZATION="Token slimy_nope")
    assert unknown.status_code == 401 and unknown.json()["error"] == "authentication_failed"
    assert unknown["WWW-Authenticate"] == "Token"
    assert drf_dispatches == ["POST"] * 5
    assert JobRecord.objects.count() == 0


def test_the_guards_refusals_on_the_quick_path(member, make_api_client, settings, drf_dispatches):
    settings.API_RATE_LIMITS = {"submit": "1/min", "write": "100/min", "read": "100/min"}
    client = make_api_client(member)
    assert client.post(URL, {}, format="json").status_code == 202
    limited = client.post(URL, {}, format="json")
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert limited.json()["details"]["scope"] == "submit" and int(limited["Retry-After"]) >= 1
    assert limited["Allow"] == "GET, POST, HEAD, OPTIONS"
    get_connection().flushdb()  # the limits' buckets and the one job pushed
    settings.API_RATE_LIMITS = {"submit": "100/min", "write": "100/min", "read": "100/min"}
    settings.QUEUE_MAX_BACKLOG = 1
    assert client.post(URL, {}, format="json").status_code == 202
    assert client.post(URL, {}, format="json").status_code == 202  # a backlog of 1: still room
    full = client.post(URL, {}, format="json")
    assert full.status_code == 503 and full.json()["error"] == "queue_full" and full["Retry-After"]
    assert drf_dispatches == []
    assert JobRecord.objects.count() == 3


def test_redis_down_is_queues_unavailable_and_writes_nothing(member, make_api_client, settings, drf_dispatches):
    client = make_api_client(member)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    refused = client.post(URL, {"title": "t"}, format="json")
    assert refused.status_code == 503 and refused.json()["error"] == "queues_unavailable"
    assert refused["Retry-After"]
    assert drf_dispatches == [] and JobRecord.objects.count() == 0


def test_scripts_flushed_from_redis_are_loaded_again(member, make_api_client):
    client = make_api_client(member)
    assert client.post(URL, {}, format="json").status_code == 202
    get_connection().script_flush()  # a restarted Redis: the scripts' SHAs answer NOSCRIPT
    again = client.post(URL, {}, format="json")
    assert again.status_code == 202
    assert get_connection().llen("rq:queue:database") == 2


def test_the_prepared_insert_is_in_the_query_log(member, make_api_client):
    with CaptureQueriesContext(connection) as queries:
        answer = make_api_client(member).post(URL, {}, format="json")
    assert answer.status_code == 202
    assert [q for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "queues_jobrecord"')]
    assert JobRecord.objects.filter(pk=answer.json()["jobId"]).exists()


def test_api_answers_carry_no_message_storage(member, make_api_client):
    answer = make_api_client(member).post(URL, {}, format="json")
    assert not hasattr(answer.wsgi_request, "_messages")


def test_a_plain_message_takes_the_quick_path_and_others_conversations_are_404(
    member, make_api_client, django_user_model, drf_dispatches
):
    from chat.models import Conversation

    mine = Conversation.objects.create(owner=member, title="mine")
    other = django_user_model.objects.create_user(username="quick-o", password="pw-quick-o-1")
    theirs = Conversation.objects.create(owner=other, title="theirs")
    client = make_api_client(member)
    answer = client.post("/api/chat/messages", {"conversationId": str(mine.pk), "content": " hi "}, format="json")
    assert answer.status_code == 202 and drf_dispatches == []
    assert answer.json()["conversationId"] == str(mine.pk)
    payload = JobRecord.objects.get(pk=answer.json()["jobId"]).payload
    assert (payload["conversation_id"], payload["role"], payload["content"]) == (str(mine.pk), "user", " hi ")
    missing = client.post("/api/chat/messages", {"conversationId": str(theirs.pk), "content": "x"}, format="json")
    assert missing.status_code == 404 and missing.json()["error"] == "conversation_not_found"
    blank = client.post("/api/chat/messages", {"conversationId": str(mine.pk), "content": " \u3000"}, format="json")
    assert blank.status_code == 400 and "content" in blank.json()["details"]
    assert drf_dispatches == ["POST", "POST"]


def test_a_plain_bot_request_takes_the_quick_path_with_its_links(member, make_api_client, drf_dispatches):
    client = make_api_client(member)
    quick = client.post("/api/chat/bot", {"prompt": "hello"}, format="json")
    slow = client.post("/api/chat/bot", {"prompt": "hello"}, format="json", HTTP_ACCEPT="application/json")
    assert quick.status_code == slow.status_code == 202 and drf_dispatches == ["POST"]
    assert set(quick.json()) == set(slow.json()) == {"ok", "jobId", "status", "statusUrl", "eventsUrl", "outputUrl"}
    job_id = quick.json()["jobId"]
    assert quick.json()["statusUrl"] == f"http://testserver/api/chat/jobs/{job_id}"
    assert quick.json()["eventsUrl"] == f"http://testserver/api/jobs/{job_id}/events"
    assert quick["Allow"] == slow["Allow"]
    assert _job_columns(job_id) == _job_columns(slow.json()["jobId"])
    gone = client.post(
        "/api/chat/bot", {"prompt": "x", "conversationId": "8d1c1d5e-6d0b-4a53-9a8c-0d8d8a6c2f11"}, format="json"
    )
    assert gone.status_code == 404 and gone.json()["error"] == "conversation_not_found"
    assert drf_dispatches == ["POST", "POST"]
