"""The chat conversation API end to end: submit → real worker → poll → read back."""

import uuid

import pytest

from chat.models import Conversation, Message
from queues.models import JobRecord
from tests.factories.chat import ConversationFactory, MessageFactory

URL = "/api/chat"


@pytest.fixture
def client(make_api_client, user):
    return make_api_client(user)


@pytest.fixture
def other_client(make_api_client, other_user):
    return make_api_client(other_user)


def _poll(client, run_worker, accepted):
    assert accepted.status_code == 202, accepted.json()
    run_worker(["database"])
    response = client.get(f"{URL}/db-jobs/{accepted.json()['jobId']}")
    assert response.status_code == 200
    return response.json()


@pytest.mark.django_db(transaction=True)
def test_conversation_lifecycle_end_to_end(client, run_worker, user):
    accepted = client.post(f"{URL}/conversations", {"title": "Weekend", "personalityMode": "casual"}, format="json")
    body = accepted.json()
    assert body["ok"] is True and body["status"] == "queued"
    assert body["statusUrl"].endswith(f"/api/jobs/{body['jobId']}")
    status = _poll(client, run_worker, accepted)
    assert set(status) == {"ok", "status", "jobId", "jobType", "createdAt", "result", "completedAt"}
    assert (status["status"], status["jobType"], status["jobId"]) == ("completed", "create_conversation", body["jobId"])
    conversation_id = status["result"]["conversationId"]

    for text in ("first", "second"):
        accepted = client.post(
            f"{URL}/messages", {"conversationId": conversation_id, "role": "user", "content": text}, format="json"
        )
        assert accepted.json()["conversationId"] == conversation_id
        assert _poll(client, run_worker, accepted)["status"] == "completed"
    accepted = client.patch(f"{URL}/conversations/{conversation_id}", {"title": "Long weekend"}, format="json")
    assert _poll(client, run_worker, accepted)["result"]["title"] == "Long weekend"

    detail = client.get(f"{URL}/conversations/{conversation_id}").json()
    assert detail["conversation"]["title"] == "Long weekend"
    assert detail["conversation"]["personalityMode"] == "casual"
    assert detail["conversation"]["messageCount"] == 2
    assert [(m["role"], m["content"], m["authorId"]) for m in detail["messages"]] == [
        ("user", "first", user.pk),
        ("user", "second", user.pk),
    ]
    listing = client.get(f"{URL}/conversations").json()
    assert [(c["conversationId"], c["messageCount"]) for c in listing["conversations"]] == [(conversation_id, 2)]

    accepted = client.delete(f"{URL}/conversations/{conversation_id}")
    assert _poll(client, run_worker, accepted)["result"]["deleted"] is True
    assert client.get(f"{URL}/conversations/{conversation_id}").status_code == 404
    assert not Message.objects.exists()
    # Deleting again (a client retrying) is accepted and succeeds: the job finds the tombstone.
    assert _poll(client, run_worker, client.delete(f"{URL}/conversations/{conversation_id}"))["status"] == "completed"


@pytest.mark.django_db(transaction=True)
def test_failed_job_status_shows_error_and_failed_at(client, run_worker, user):
    conversation = ConversationFactory(owner=user)
    accepted = client.post(
        f"{URL}/messages", {"conversationId": str(conversation.pk), "content": "late"}, format="json"
    )
    conversation.delete()  # gone before a worker picked the job up
    status = _poll(client, run_worker, accepted)
    assert status["status"] == "failed"
    assert status["error"]["code"] == "conversation_not_found"
    assert "failedAt" in status and "result" not in status and "completedAt" not in status


@pytest.mark.django_db(transaction=True)
def test_idempotency_key_replays_the_same_job(client, run_worker, user):
    headers = {"HTTP_IDEMPOTENCY_KEY": "create-1"}
    first = client.post(f"{URL}/conversations", {"title": "once"}, format="json", **headers)
    again = client.post(f"{URL}/conversations", {"title": "once"}, format="json", **headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["jobId"] == first.json()["jobId"]
    run_worker(["database"])
    assert Conversation.objects.filter(owner=user).count() == 1


@pytest.mark.django_db
def test_reads_are_direct_and_paginated(client, user, other_user):
    conversations = ConversationFactory.create_batch(5, owner=user)
    ConversationFactory(owner=other_user)
    for count, conversation in enumerate(conversations):
        MessageFactory.create_batch(count, conversation=conversation)

    body = client.get(f"{URL}/conversations", {"limit": 2, "offset": 1}).json()
    # newest first (the last created is the most recently updated)
    assert [c["conversationId"] for c in body["conversations"]] == [str(conversations[3].pk), str(conversations[2].pk)]
    assert [c["messageCount"] for c in body["conversations"]] == [3, 2]
    assert body["pagination"] == {"limit": 2, "offset": 1, "total": 5, "hasMore": True}

    detail = client.get(f"{URL}/conversations/{conversations[4].pk}", {"limit": 3, "offset": 2}).json()
    expected = list(Message.objects.filter(conversation=conversations[4]).order_by("created_at", "id"))[2:]
    assert [m["messageId"] for m in detail["messages"]] == [str(m.pk) for m in expected]
    assert detail["pagination"] == {"limit": 3, "offset": 2, "total": 4, "hasMore": False}


@pytest.mark.django_db
def test_someone_elses_conversation_is_not_found_everywhere(client, other_user):
    theirs = ConversationFactory(owner=other_user)
    calls = [
        client.get(f"{URL}/conversations/{theirs.pk}"),
        client.patch(f"{URL}/conversations/{theirs.pk}", {"title": "x"}, format="json"),
        client.delete(f"{URL}/conversations/{theirs.pk}"),
        client.post(f"{URL}/messages", {"conversationId": str(theirs.pk), "content": "x"}, format="json"),
        client.get(f"{URL}/conversations/{uuid.uuid4()}"),
        client.get(f"{URL}/conversations/not-a-uuid"),
    ]
    for response in calls:
        assert response.status_code == 404
        assert response.json() == {"ok": False, "error": "conversation_not_found", "message": "Conversation not found."}
    assert not JobRecord.objects.exists()


@pytest.mark.django_db
def test_someone_elses_job_is_not_found(client, other_client):
    job_id = other_client.post(f"{URL}/conversations", {}, format="json").json()["jobId"]
    assert other_client.get(f"{URL}/db-jobs/{job_id}").status_code == 200
    for missing in (job_id, uuid.uuid4(), "junk"):
        response = client.get(f"{URL}/db-jobs/{missing}")
        assert response.status_code == 404
        assert response.json()["error"] == "job_not_found"


@pytest.mark.django_db
def test_unauthenticated_requests_are_refused(make_api_client):
    anonymous = make_api_client()
    for response in (anonymous.get(f"{URL}/conversations"), anonymous.post(f"{URL}/messages", {}, format="json")):
        assert response.status_code == 401
        assert response.json()["error"] == "not_authenticated"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, field",
    [
        ({"title": "x" * 201}, "title"),
        ({"personalityMode": "grumpy"}, "personalityMode"),
        ({"title": "ok", "owner": 1}, "owner"),
        ({"personality_mode": "casual"}, "personality_mode"),
    ],
)
def test_create_conversation_validation(client, body, field):
    response = client.post(f"{URL}/conversations", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["details"]
    assert not JobRecord.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, field",
    [
        ({"content": "x" * 10_001}, "content"),
        ({"content": "   "}, "content"),
        ({}, "content"),
        ({"content": "hi", "role": "robot"}, "role"),
        ({"content": "hi", "jobId": "x"}, "jobId"),
    ],
)
def test_save_message_validation(client, user, body, field):
    conversation = ConversationFactory(owner=user)
    response = client.post(f"{URL}/messages", {"conversationId": str(conversation.pk), **body}, format="json")
    assert response.status_code == 400
    assert field in response.json()["details"]
    assert not JobRecord.objects.exists()


@pytest.mark.django_db
def test_save_message_reports_unknown_and_invalid_fields_together(client):
    response = client.post(f"{URL}/messages", {"conversationId": "nope", "content": "", "extra": 1}, format="json")
    assert response.status_code == 400
    assert set(response.json()["details"]) == {"conversationId", "content", "extra"}


@pytest.mark.django_db
@pytest.mark.parametrize("body", [{}, {"title": "x" * 201}, {"owner": 2}, {"personalityMode": ""}])
def test_update_conversation_validation(client, user, body):
    conversation = ConversationFactory(owner=user)
    response = client.patch(f"{URL}/conversations/{conversation.pk}", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"page": 2}, "page"),
    ],
)
def test_pagination_parameters_are_validated(client, user, query, field):
    conversation = ConversationFactory(owner=user)
    for url in (f"{URL}/conversations", f"{URL}/conversations/{conversation.pk}"):
        response = client.get(url, query)
        assert response.status_code == 400
        assert field in response.json()["details"]


@pytest.mark.django_db
def test_malformed_json_is_a_400(client):
    response = client.post(f"{URL}/conversations", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_request"
    response = client.post(f"{URL}/conversations", [1, 2], format="json")
    assert response.status_code == 400


@pytest.mark.django_db
def test_openapi_schema_for_the_chat_endpoints_has_no_warnings():
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    from chat.urls import urlpatterns

    GENERATOR_STATS.reset()
    schema = SchemaGenerator(patterns=urlpatterns).get_schema(request=None, public=True)
    assert not GENERATOR_STATS, dict(GENERATOR_STATS._warn_cache) | dict(GENERATOR_STATS._error_cache)
    assert {"/conversations", "/conversations/{conversation_id}", "/messages", "/db-jobs/{job_id}"} <= set(
        schema["paths"]
    )


@pytest.mark.django_db
def test_db_job_status_hides_untyped_errors_like_the_job_endpoint(client, user):
    # One rule (queues.selectors.job_error_for_viewer): an exception's text may name hosts and users.
    from queues.constants import JobStatus
    from queues.services import job_enqueue

    job = job_enqueue(job_type="create_conversation", payload={}, owner=user)
    JobRecord.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED,
        error_code="OperationalError",
        error_message='connection to "db.internal" as "slimy" failed',
    )
    body = client.get(f"{URL}/db-jobs/{job.pk}").json()
    assert body["error"] == {"code": "OperationalError", "message": "The job failed because of an internal error."}
    assert body == {**body, **{k: v for k, v in client.get(f"/api/jobs/{job.pk}").json().items() if k == "error"}}
    JobRecord.objects.filter(pk=job.pk).update(
        error_code="conversation_not_found", error_message="Conversation not found."
    )
    assert client.get(f"{URL}/db-jobs/{job.pk}").json()["error"]["message"] == "Conversation not found."
