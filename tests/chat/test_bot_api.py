"""POST /api/chat/bot, GET /api/chat/jobs/<id>, and the job output endpoints, through HTTP."""

import json
import uuid

import pytest

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.output import FLUSH_SECONDS
from tests.fake_llm import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def _post(client, body, **headers):
    return client.post("/api/chat/bot", body, format="json", **headers)


def test_submit_answers_202_with_links_and_the_worker_replies(fake_llm, user, make_api_client, drain):
    client = make_api_client(user)
    fake_llm.then(Behaviour(chunks=["Hi", " Alice"]))
    response = _post(client, {"prompt": "Say hi", "personalityMode": "professional"})
    assert response.status_code == 202
    body = response.json()
    job_id = body["jobId"]
    assert body["ok"] is True and body["status"] == "queued"
    assert body["statusUrl"] == f"http://testserver/api/chat/jobs/{job_id}"
    assert body["eventsUrl"] == f"http://testserver/api/jobs/{job_id}/events"
    assert body["outputUrl"] == f"http://testserver/api/jobs/{job_id}/output"
    record = JobRecord.objects.get(pk=job_id)
    assert record.owner == user and record.queue == "chat" and record.job_type == "chat_bot_interaction"
    assert record.payload == {"prompt": "Say hi", "personalityMode": "professional"}

    status = client.get(f"/api/chat/jobs/{job_id}").json()
    assert status["status"] == "queued" and "result" not in status and "completedAt" not in status

    drain(record)
    status = client.get(f"/api/chat/jobs/{job_id}").json()
    assert status["ok"] is True and status["status"] == "completed" and status["jobId"] == job_id
    assert status["result"]["reply"] == "Hi Alice" and status["result"]["usedFallback"] is False
    assert status["createdAt"] and status["completedAt"]
    assert "error" not in status and "failedAt" not in status


@pytest.mark.parametrize(
    "body, field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": " \n "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({"guildId": "1"}, "prompt"),
        ({"prompt": "hi", "personalityMode": "evil"}, "personalityMode"),
        ({"prompt": "hi", "conversationId": "123"}, "conversationId"),
        ({"prompt": "hi", "model": "gpt-5"}, "model"),
        ({"prompt": ["a"]}, "prompt"),
    ],
)
def test_invalid_input_is_a_400_naming_the_field(user, make_api_client, body, field):
    response = _post(make_api_client(user), body)
    assert response.status_code == 400
    assert response.json()["ok"] is False and response.json()["error"] == "validation_error"
    assert field in response.json()["details"]
    assert not JobRecord.objects.exists()


def test_non_object_body_is_a_400(user, make_api_client):
    response = make_api_client(user).post("/api/chat/bot", json.dumps(["hi"]), content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "validation_error"


def test_anonymous_is_refused(make_api_client):
    response = _post(make_api_client(), {"prompt": "hi"})
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_unknown_conversation_is_a_404(user, make_api_client):
    response = _post(make_api_client(user), {"prompt": "hi", "conversationId": str(uuid.uuid4())})
    assert response.status_code == 404
    assert response.json()["error"] == "conversation_not_found"
    assert not JobRecord.objects.exists()


def test_idempotency_key_replays_the_same_job(user, make_api_client):
    client = make_api_client(user)
    first = _post(client, {"prompt": "once"}, HTTP_IDEMPOTENCY_KEY="k-1")
    second = _post(client, {"prompt": "once"}, HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["jobId"] == second.json()["jobId"]
    assert second.json()["eventsUrl"] == first.json()["eventsUrl"]
    assert JobRecord.objects.count() == 1


def test_someone_elses_job_is_a_404_everywhere(user, other_user, make_api_client):
    job_id = _post(make_api_client(user), {"prompt": "mine"}).json()["jobId"]
    other = make_api_client(other_user)
    for url in (f"/api/chat/jobs/{job_id}", f"/api/jobs/{job_id}/output", f"/api/jobs/{job_id}/events"):
        response = other.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"] == "job_not_found"
    assert other.get("/api/chat/jobs/not-a-uuid").json()["error"] == "job_not_found"


def test_chat_status_endpoint_only_shows_chat_jobs(user, make_api_client):
    from queues.services import job_enqueue

    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user)
    response = make_api_client(user).get(f"/api/chat/jobs/{job.pk}")
    assert response.status_code == 404 and response.json()["error"] == "job_not_found"


def test_fallback_and_retrying_states_are_visible(fake_llm, user, make_api_client, run_worker, drain):
    client = make_api_client(user)
    fake_llm.always(Behaviour(status=500))
    job_id = _post(client, {"prompt": "hi"}).json()["jobId"]
    run_worker(max_jobs=1)
    status = client.get(f"/api/chat/jobs/{job_id}").json()
    assert status["status"] == JobStatus.RETRYING
    assert status["error"] == {"code": "llm_unavailable", "message": "The LLM provider answered HTTP 500."}
    drain(JobRecord.objects.get(pk=job_id))
    status = client.get(f"/api/chat/jobs/{job_id}").json()
    assert status["status"] == "completed" and status["result"]["usedFallback"] is True
    assert "error" not in status


def test_output_endpoint_pages_by_cursor(fake_llm, user, make_api_client, drain):
    client = make_api_client(user)
    # Spaced wider than the output log's coalescing window: one entry per token.
    fake_llm.then(Behaviour(chunks=["one", " two", " three"], delay_per_chunk=FLUSH_SECONDS + 0.03))
    job_id = _post(client, {"prompt": "count"}).json()["jobId"]

    empty = client.get(f"/api/jobs/{job_id}/output").json()
    assert empty["chunks"] == [] and empty["cursor"] == "0" and empty["done"] is False

    drain(JobRecord.objects.get(pk=job_id))
    first = client.get(f"/api/jobs/{job_id}/output", {"limit": 2}).json()
    assert [c["type"] for c in first["chunks"]] == ["segment", "chunk"]
    assert first["more"] is True and first["done"] is False
    rest = client.get(f"/api/jobs/{job_id}/output", {"after": first["cursor"]}).json()
    assert [c["text"] for c in rest["chunks"]] == [" two", " three"]
    assert rest["status"] == "completed" and rest["done"] is True and rest["more"] is False
    after_end = client.get(f"/api/jobs/{job_id}/output", {"after": rest["cursor"]}).json()
    assert after_end["chunks"] == [] and after_end["cursor"] == rest["cursor"] and after_end["done"] is True


@pytest.mark.parametrize(
    "params, code",
    [
        ({"after": "yesterday"}, "invalid_cursor"),
        ({"after": "1-2-3"}, "invalid_cursor"),
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "many"}, "invalid_limit"),
        ({"limit": "1001"}, "invalid_limit"),
    ],
)
def test_output_endpoint_rejects_bad_parameters(user, make_api_client, params, code):
    client = make_api_client(user)
    job_id = _post(client, {"prompt": "hi"}).json()["jobId"]
    response = client.get(f"/api/jobs/{job_id}/output", params)
    assert response.status_code == 400 and response.json()["error"] == code


def test_output_log_expires_with_the_result(fake_llm, user, make_api_client, drain, redis_conn, settings):
    settings.JOB_RESULT_TTL = 120
    client = make_api_client(user)
    job_id = _post(client, {"prompt": "hi"}).json()["jobId"]
    drain(JobRecord.objects.get(pk=job_id))
    ttl = redis_conn.ttl(f"slimy:job:{job_id}:output")
    assert 100 < ttl <= 120


def test_an_out_of_range_output_cursor_is_a_400_not_a_500(make_api_client, user):
    from queues.services import job_enqueue

    job = job_enqueue(job_type="chat_bot_interaction", payload={"prompt": "hi"}, owner=user)
    response = make_api_client(user).get(f"/api/jobs/{job.pk}/output?after=99999999999999999999")
    assert response.status_code == 400 and response.json()["error"] == "invalid_cursor"
