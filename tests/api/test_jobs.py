"""The generic job endpoints: shape, ownership, list filters and cursor pagination, retry, cancel."""

import datetime as dt

import pytest
from django.utils import timezone

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


def _job(owner, value="x", job_type="test_echo", **kwargs):
    payload = {"value": value} if job_type == "test_echo" else {"tag": value}
    return job_enqueue(job_type=job_type, payload=payload, owner=owner, **kwargs)


def test_job_detail_has_the_documented_shape(member, make_api_client, run_worker):
    job = _job(member, "hello")
    run_worker()
    body = make_api_client(member).get(f"/api/jobs/{job.id}").json()
    assert body == {
        "ok": True,
        "jobId": str(job.id),
        "jobType": "test_echo",
        "queue": "database",
        "status": "completed",
        "priority": "normal",
        "tenant": f"user:{member.pk}",
        "attempts": 1,
        "maxAttempts": 3,
        "progress": None,
        "createdAt": body["createdAt"],
        "startedAt": body["startedAt"],
        "finishedAt": body["finishedAt"],
        "result": {"echo": "hello"},
        "error": None,
    }
    assert body["createdAt"] <= body["startedAt"] <= body["finishedAt"]


def test_failed_job_error_has_code_and_message_but_no_traceback(member, make_api_client, run_worker):
    job = _job(member, "t", job_type="test_permanent")
    run_worker()
    body = make_api_client(member).get(f"/api/jobs/{job.id}").json()
    assert body["status"] == "failed"
    assert body["error"] == {"code": "never_works", "message": "this can never work"}
    assert "Traceback" not in str(body) and "traceback" not in str(body).lower()


def test_untyped_error_messages_are_hidden_from_owners_but_not_staff(member, staff, make_api_client):
    job = _job(member)
    JobRecord.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED, error_code="OperationalError", error_message="could not connect to db.internal:5432"
    )
    owner_view = make_api_client(member).get(f"/api/jobs/{job.id}").json()
    assert owner_view["error"] == {
        "code": "OperationalError",
        "message": "The job failed because of an internal error.",
    }
    staff_view = make_api_client(staff).get(f"/api/jobs/{job.id}").json()
    assert staff_view["error"]["message"] == "could not connect to db.internal:5432"


def test_list_shows_only_the_callers_jobs_newest_first(member, other_member, make_api_client):
    mine = [_job(member, f"m{i}") for i in range(3)]
    _job(other_member, "theirs")
    body = make_api_client(member).get("/api/jobs").json()
    assert body["ok"] is True
    assert [j["jobId"] for j in body["results"]] == [str(j.id) for j in reversed(mine)]
    assert "ok" not in body["results"][0]


def test_list_filters_by_status_type_queue_and_since(member, make_api_client):
    echo = _job(member, "e")
    record = _job(member, "r", job_type="test_record")
    old = _job(member, "old")
    JobRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=2))
    JobRecord.objects.filter(pk=record.pk).update(status=JobStatus.FAILED)
    client = make_api_client(member)

    def ids(query):
        response = client.get("/api/jobs", query)
        assert response.status_code == 200, response.json()
        return {j["jobId"] for j in response.json()["results"]}

    assert ids({"status": "failed"}) == {str(record.id)}
    assert ids({"status": "failed,queued"}) == {str(record.id), str(echo.id), str(old.id)}
    assert ids({"type": "test_echo"}) == {str(echo.id), str(old.id)}
    assert ids({"queue": "audit"}) == {str(record.id)}
    since = (timezone.now() - dt.timedelta(days=1)).isoformat()
    assert ids({"since": since}) == {str(echo.id), str(record.id)}


def test_list_paginates_with_a_cursor(member, make_api_client):
    jobs = [_job(member, f"v{i}") for i in range(5)]
    client = make_api_client(member)
    seen = []
    url = "/api/jobs?limit=2"
    while url:
        body = client.get(url).json()
        assert len(body["results"]) <= 2
        seen += [j["jobId"] for j in body["results"]]
        url = body["next"]
    assert seen == [str(j.id) for j in reversed(jobs)]


@pytest.mark.parametrize(
    "query, field",
    [
        ({"status": "exploded"}, "status"),
        ({"queue": "nope"}, "queue"),
        ({"since": "yesterday"}, "since"),
        ({"limit": "1000"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"sort": "asc"}, "sort"),
    ],
)
def test_list_rejects_bad_and_unknown_query_parameters(member, make_api_client, query, field):
    response = make_api_client(member).get("/api/jobs", query)
    assert response.status_code == 400
    assert response.json()["error"] == "validation_error"
    assert field in response.json()["details"]


def test_staff_may_list_other_users_jobs_members_may_not(member, other_member, staff, make_api_client):
    theirs = _job(other_member, "t")
    assert make_api_client(staff).get("/api/jobs").json()["results"] == []
    by_owner = make_api_client(staff).get("/api/jobs", {"owner": "otto"}).json()["results"]
    assert [j["jobId"] for j in by_owner] == [str(theirs.id)]
    everyone = make_api_client(staff).get("/api/jobs", {"owner": "*"}).json()["results"]
    assert str(theirs.id) in {j["jobId"] for j in everyone}
    refused = make_api_client(member).get("/api/jobs", {"owner": "otto"})
    assert refused.status_code == 403 and refused.json()["error"] == "permission_denied"


def test_owner_retries_a_failed_job_and_it_runs_again(member, make_api_client, run_worker, redis_conn):
    job = _job(member, "again", job_type="test_permanent")
    run_worker()
    response = make_api_client(member).post(f"/api/jobs/{job.id}/retry", format="json")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    run_worker()
    assert redis_conn.llen("test:permanent") == 2
    assert JobRecord.objects.get(pk=job.pk).attempts == 2


def test_retrying_a_completed_job_is_a_conflict(member, make_api_client, run_worker):
    job = _job(member)
    run_worker()
    response = make_api_client(member).post(f"/api/jobs/{job.id}/retry")
    assert response.status_code == 409 and response.json()["error"] == "job_not_retryable"


def test_cancel_a_waiting_job_then_cancel_again_is_a_conflict(member, make_api_client, run_worker, redis_conn):
    job = _job(member, "never")
    client = make_api_client(member)
    response = client.post(f"/api/jobs/{job.id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    run_worker()
    assert redis_conn.llen("test:ran") == 0
    again = client.post(f"/api/jobs/{job.id}/cancel")
    assert again.status_code == 409 and again.json()["error"] == "job_not_cancellable"


def test_staff_can_read_retry_and_cancel_any_job(member, staff, make_api_client, run_worker):
    job = _job(member, "s", job_type="test_permanent")
    run_worker()
    client = make_api_client(staff)
    assert client.get(f"/api/jobs/{job.id}").status_code == 200
    assert client.post(f"/api/jobs/{job.id}/retry").status_code == 202
    assert client.post(f"/api/jobs/{job.id}/cancel").json()["status"] == "cancelled"


def test_me_names_the_caller_and_roles(member, staff, make_api_client):
    assert make_api_client(member).get("/api/me").json() == {
        "ok": True,
        "username": "mia",
        "roles": ["member"],
        "isStaff": False,
    }
    assert make_api_client(staff).get("/api/me").json()["roles"] == ["staff"]


@pytest.mark.django_db(transaction=True)
def test_retry_and_cancel_over_the_api_are_audited(make_api_client, user, run_worker):
    from audit.models import AuditLog
    from queues.services import job_enqueue

    client = make_api_client(user)
    failed = job_enqueue(job_type="test_permanent", payload={"tag": "audited"}, owner=user)
    run_worker(["database"])
    assert (
        client.post(f"/api/jobs/{failed.pk}/retry", {}, format="json", HTTP_X_REQUEST_ID="req-audit-retry").status_code
        == 202
    )
    waiting = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user, delay=60)
    assert client.post(f"/api/jobs/{waiting.pk}/cancel", {}, format="json").status_code == 200
    run_worker(["audit"])
    retry = AuditLog.objects.get(action="job.retry")
    assert (retry.resource_type, retry.resource_id, retry.actor_id) == ("job", str(failed.pk), user.pk)
    assert retry.request_id == "req-audit-retry"
    assert AuditLog.objects.get(action="job.cancel").resource_id == str(waiting.pk)
