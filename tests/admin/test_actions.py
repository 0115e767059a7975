"""Job actions from the admin: each changes the job, the queue and both logs as promised."""

import pytest
from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from rq.job import Job

from queues.connections import get_rq_queue
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:queues_jobrecord_changelist"


def _record(job):
    return JobRecord.objects.get(pk=job.pk)


def _failed_jobs(run_worker, n=2):
    jobs = [job_enqueue(job_type="test_permanent", payload={"tag": f"t{i}"}) for i in range(n)]
    run_worker()
    assert {_record(j).status for j in jobs} == {JobStatus.FAILED}
    return jobs


def _bulk(client, action, jobs, **extra):
    data = {"action": action, "index": 0, "_selected_action": [str(j.pk) for j in jobs], **extra}
    return client.post(reverse(CHANGELIST), data)


def _log_messages(job):
    return list(LogEntry.objects.filter(object_id=str(job.pk)).values_list("change_message", flat=True))


def _audit_events(action):
    AuditLog = apps.get_model("audit", "AuditLog")  # built by the audit area; merged from main
    return list(AuditLog.objects.filter(action=action))


def test_bulk_retry_asks_for_confirmation_then_retries_and_logs(superuser, admin_client_for, run_worker, redis_conn):
    jobs = _failed_jobs(run_worker)
    client = admin_client_for(superuser)

    confirm = _bulk(client, "retry_jobs", jobs)
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "Retry 2 job(s)?" in page and all(str(j.pk) in page for j in jobs)
    assert {_record(j).status for j in jobs} == {JobStatus.FAILED}  # nothing changed yet

    done = _bulk(client, "retry_jobs", jobs, confirm="yes", reason="provider fixed")
    assert done.status_code == 302
    for job in jobs:
        record = _record(job)
        assert record.status == JobStatus.QUEUED and record.error_message == ""
        assert Job.exists(str(job.pk), connection=redis_conn)
        assert any("Reason: provider fixed" in m for m in _log_messages(job))
    assert get_rq_queue("database").count == 2
    run_worker()
    assert [_record(j).attempts for j in jobs] == [2, 2]
    events = _audit_events("admin.job_retry")
    assert len(events) == 1
    assert sorted(events[0].details["jobs"]) == sorted(str(j.pk) for j in jobs)
    assert events[0].details["reason"] == "provider fixed"


def test_single_cancel_from_the_detail_page(superuser, admin_client_for, redis_conn, run_worker):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    client = admin_client_for(superuser)
    url = reverse("admin:queues_jobrecord_act", args=[job.pk, "cancel"])
    assert "Cancel 1 job(s)?" in client.get(url).content.decode()
    response = client.post(url, {"reason": "user asked"})
    assert response.status_code == 302
    assert _record(job).status == JobStatus.CANCELLED
    assert not Job.exists(str(job.pk), connection=redis_conn)
    assert get_rq_queue("database").count == 0
    run_worker()
    assert redis_conn.llen("test:ran") == 0
    assert any("Cancel via admin. Reason: user asked" in m for m in _log_messages(job))
    assert _audit_events("admin.job_cancel")[0].resource_id == str(job.pk)


def test_requeue_copy_creates_a_new_job_and_leaves_the_original(superuser, admin_client_for, run_worker, user):
    original = job_enqueue(job_type="test_echo", payload={"value": "copy-me"}, owner=user, priority="high")
    run_worker()
    client = admin_client_for(superuser)
    response = client.post(reverse("admin:queues_jobrecord_act", args=[original.pk, "requeue_copy"]), {})
    copy = JobRecord.objects.filter(job_type="test_echo").exclude(pk=original.pk).get()
    assert response["Location"] == reverse("admin:queues_jobrecord_change", args=[copy.pk])
    assert copy.payload == _record(original).payload and copy.payload["value"] == "copy-me"
    assert (copy.job_type, copy.owner_id, copy.priority) == ("test_echo", user.pk, "high")
    assert copy.status == JobStatus.QUEUED
    assert get_rq_queue("database", "high").count == 1
    assert _record(original).status == JobStatus.COMPLETED
    assert any(str(copy.pk) in m for m in _log_messages(original))
    run_worker()
    assert _record(copy).status == JobStatus.COMPLETED
    assert _audit_events("admin.job_requeue_copy")[0].details["copies"] == {str(original.pk): str(copy.pk)}


def test_delete_from_redis_marks_waiting_job_cancelled_and_clears_finished_ones(
    superuser, admin_client_for, run_worker, redis_conn
):
    finished = job_enqueue(job_type="test_echo", payload={"value": "a"})
    run_worker()
    assert Job.exists(str(finished.pk), connection=redis_conn)  # RQ keeps the finished job for result_ttl
    waiting = job_enqueue(job_type="test_echo", payload={"value": "b"})
    client = admin_client_for(superuser)
    _bulk(client, "delete_from_redis", [finished, waiting], confirm="yes", reason="cleanup")
    assert not Job.exists(str(finished.pk), connection=redis_conn)
    assert not Job.exists(str(waiting.pk), connection=redis_conn)
    assert _record(finished).status == JobStatus.COMPLETED
    assert _record(waiting).status == JobStatus.CANCELLED
    assert get_rq_queue("database").count == 0


def test_retry_of_a_job_that_cannot_be_retried_is_skipped_and_reported(superuser, admin_client_for, run_worker):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    run_worker()
    client = admin_client_for(superuser)
    response = _bulk(client, "retry_jobs", [job], confirm="yes")
    followed = client.get(response["Location"]).content.decode()
    assert "skipped" in followed and "this one is completed" in followed
    assert _record(job).status == JobStatus.COMPLETED
    assert _log_messages(job) == []


def test_actions_are_gated_by_their_own_permission(make_staff, admin_client_for, run_worker):
    failed = _failed_jobs(run_worker, n=1)[0]
    queued = job_enqueue(job_type="test_echo", payload={"value": "x"})
    retrier = admin_client_for(make_staff("view", "retry"))

    # Retry is allowed; cancel is refused on the detail page and absent from the bulk actions.
    assert retrier.post(reverse("admin:queues_jobrecord_act", args=[queued.pk, "cancel"]), {}).status_code == 403
    _bulk(retrier, "cancel_jobs", [queued], confirm="yes")
    assert _record(queued).status == JobStatus.QUEUED
    assert retrier.post(reverse("admin:queues_jobrecord_act", args=[failed.pk, "retry"]), {}).status_code == 302
    assert _record(failed).status == JobStatus.QUEUED

    viewer = admin_client_for(make_staff("view"))
    assert (
        viewer.post(reverse("admin:queues_jobrecord_act", args=[failed.pk, "delete_from_redis"]), {}).status_code == 403
    )
    assert viewer.get(reverse("admin:queues_jobrecord_act", args=[failed.pk, "retry"])).status_code == 403


def test_reason_longer_than_allowed_is_a_form_error(superuser, admin_client_for):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    client = admin_client_for(superuser)
    response = client.post(reverse("admin:queues_jobrecord_act", args=[job.pk, "cancel"]), {"reason": "x" * 501})
    assert response.status_code == 200
    assert "at most 500 characters" in response.content.decode()
    assert _record(job).status == JobStatus.QUEUED
