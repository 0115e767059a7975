"""The queue dashboard: its figures, and its operations (pause/resume, retry failed of a type, clean)."""

import datetime as dt
import threading
import time

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.urls import reverse
from django.utils import timezone

from queues.connections import get_connection
from queues.constants import JobStatus, QueueName
from queues.models import JobAttempt, JobRecord
from queues.services import job_enqueue
from queues.worker import SlimySimpleWorker, paused_key
from tests.factories.admin import FinishedJobFactory, JobAttemptFactory, JobRecordFactory

DASHBOARD = "admin:queues_jobrecord_dashboard"


def _queue(response, name):
    return next(q for q in response.context["queues"] if q.name == name)


@pytest.mark.django_db
def test_dashboard_shows_ledger_counts_throughput_latency_and_oldest_job(superuser, admin_client_for):
    now = timezone.now()
    for status, n in ((JobStatus.QUEUED, 3), (JobStatus.STARTED, 1), (JobStatus.RETRYING, 2), (JobStatus.FAILED, 4)):
        JobRecordFactory.create_batch(n, queue=QueueName.AUDIT, job_type="test_record", status=status)
    oldest = JobRecordFactory(queue=QueueName.AUDIT, job_type="test_record", status=JobStatus.QUEUED)
    JobRecord.objects.filter(pk=oldest.pk).update(created_at=now - dt.timedelta(minutes=10))
    # Four attempts finished in the last hour, running 1, 2, 3 and 4 s, each started 0.5 s after creation.
    for seconds in (1, 2, 3, 4):
        started = now - dt.timedelta(minutes=5)
        job = FinishedJobFactory(
            queue=QueueName.CHAT,
            job_type="test_sleep",
            started_at=started,
            finished_at=started + dt.timedelta(seconds=seconds),
        )
        JobRecord.objects.filter(pk=job.pk).update(created_at=started - dt.timedelta(seconds=0.5))
        JobAttemptFactory(job=job, started_at=started, finished_at=started + dt.timedelta(seconds=seconds))
    failed = FinishedJobFactory(queue=QueueName.CHAT, job_type="test_sleep", status=JobStatus.FAILED)
    JobAttemptFactory(
        job=failed, outcome=JobAttempt.Outcome.FAILED, started_at=now - dt.timedelta(seconds=10), finished_at=now
    )
    FinishedJobFactory(queue=QueueName.CHAT, job_type="test_sleep", finished_at=now - dt.timedelta(hours=2))

    response = admin_client_for(superuser).get(reverse(DASHBOARD))
    assert response.status_code == 200
    audit = _queue(response, "audit")
    assert audit.counts == {"queued": 4, "scheduled": 0, "started": 1, "retrying": 2, "failed": 4}
    assert 590 <= audit.oldest_queued_age <= 660
    chat = _queue(response, "chat")
    assert (chat.completed_last_hour, chat.failed_last_hour) == (4, 1)  # the one two hours ago is out
    assert sum(bar.completed for bar in chat.chart) == 4 and sum(bar.failed for bar in chat.chart) == 1
    # Attempts of 1, 2, 3, 4 s and the failed one of 10 s: percentile_cont interpolates between ranks.
    assert chat.duration_p50 == pytest.approx(3.0, abs=0.01)
    assert chat.duration_p95 == pytest.approx(8.8, abs=0.01)
    assert chat.wait_p50 == pytest.approx(0.5, abs=0.01)
    page = response.content.decode()
    assert "<svg" in page and 'class="c"' in page and 'class="f"' in page
    assert reverse("django_rq:home") in page


@pytest.mark.django_db
def test_dashboard_lists_workers(superuser, admin_client_for, redis_conn):
    worker = SlimySimpleWorker([QueueName.CHAT], connection=redis_conn, name="dash-worker-1")
    worker.register_birth()
    try:
        response = admin_client_for(superuser).get(reverse(DASHBOARD))
    finally:
        worker.register_death()
    row = next(w for w in response.context["workers"] if w["name"] == "dash-worker-1")
    assert row["queues"] == ["chat"] and row["host"] and row["state"]
    assert "dash-worker-1" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_pause_stops_workers_taking_the_queue_and_resume_lets_them(superuser, admin_client_for, run_worker, redis_conn):
    client = admin_client_for(superuser)
    response = client.post(reverse("admin:queues_jobrecord_pause"), {"queue": "database", "reason": "db maintenance"})
    assert response.status_code == 302
    assert redis_conn.exists(paused_key("database"))
    assert _queue(client.get(reverse(DASHBOARD)), "database").paused["reason"] == "db maintenance"

    paused_job = job_enqueue(job_type="test_echo", payload={"value": "waits"})  # submissions still accepted
    other_job = job_enqueue(job_type="test_record", payload={"tag": "audit-runs"})
    run_worker()
    assert JobRecord.objects.get(pk=paused_job.pk).status == JobStatus.QUEUED
    assert JobRecord.objects.get(pk=other_job.pk).status == JobStatus.COMPLETED

    client.post(reverse("admin:queues_jobrecord_resume"), {"queue": "database"})
    assert not redis_conn.exists(paused_key("database"))
    run_worker()
    assert JobRecord.objects.get(pk=paused_job.pk).status == JobStatus.COMPLETED
    messages = list(LogEntry.objects.values_list("change_message", flat=True))
    assert "Paused queue database. Reason: db maintenance" in messages and "Resumed queue database." in messages


@pytest.mark.django_db(transaction=True)
def test_a_listening_worker_notices_a_resume_while_it_waits():
    """A worker blocked on a paused queue (not in burst mode) takes the job within seconds of the resume."""
    conn = get_connection()
    conn.set(paused_key("database"), "{}")
    job = job_enqueue(job_type="test_echo", payload={"value": "late"})
    worker = SlimySimpleWorker([QueueName.DATABASE], connection=conn)
    started = time.monotonic()
    worker.work(burst=False, max_idle_time=2, logging_level="WARNING")  # paused: idles out, takes nothing
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert time.monotonic() - started >= 2

    timer = threading.Timer(1.0, lambda: conn.delete(paused_key("database")))
    timer.start()
    worker = SlimySimpleWorker([QueueName.DATABASE], connection=conn)
    worker.work(burst=False, max_idle_time=10, max_jobs=1, logging_level="WARNING")
    timer.join()
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_retry_all_failed_of_a_type(superuser, admin_client_for, run_worker):
    failed = [job_enqueue(job_type="test_permanent", payload={"tag": str(i)}) for i in range(3)]
    other = job_enqueue(job_type="test_flaky", payload={"succeed_on": 9, "tag": "other"})
    run_worker()
    JobRecord.objects.filter(pk=other.pk).update(status=JobStatus.FAILED)
    client = admin_client_for(superuser)
    url = reverse("admin:queues_jobrecord_retry_failed")
    confirm = client.post(url, {"job_type": "test_permanent", "reason": "deploy fixed it"})
    assert confirm.status_code == 200 and confirm.context["count"] == 3
    assert JobRecord.objects.filter(status=JobStatus.FAILED).count() == 4
    response = client.post(url, {"job_type": "test_permanent", "reason": "deploy fixed it", "confirm": "yes"})
    assert response.status_code == 302
    assert set(JobRecord.objects.filter(pk__in=[j.pk for j in failed]).values_list("status", flat=True)) == {"queued"}
    assert JobRecord.objects.get(pk=other.pk).status == JobStatus.FAILED
    run_worker()
    assert list(JobRecord.objects.filter(pk__in=[j.pk for j in failed]).values_list("attempts", flat=True)) == [2, 2, 2]
    assert LogEntry.objects.filter(change_message__contains="Reason: deploy fixed it").count() == 3


@pytest.mark.django_db
def test_clean_validates_the_date_and_deletes_only_old_finished_records(superuser, admin_client_for):
    client = admin_client_for(superuser)
    url = reverse("admin:queues_jobrecord_clean")
    tomorrow = (timezone.now() + dt.timedelta(days=1)).date().isoformat()
    for value, error in (
        (tomorrow, "The date is in the future."),
        ("not-a-date", "Enter a valid date."),
        (timezone.now().date().isoformat(), "Choose a day before today"),
    ):
        response = client.post(url, {"before": value})
        assert response.status_code == 200
        assert error in response.context["clean_form"].errors["before"][0]
        assert error in response.content.decode()

    long_ago = timezone.now() - dt.timedelta(days=40)
    old_done = FinishedJobFactory(finished_at=long_ago)
    JobAttemptFactory(job=old_done)
    old_failed = FinishedJobFactory(status=JobStatus.FAILED, finished_at=long_ago)
    old_waiting = JobRecordFactory(status=JobStatus.QUEUED)
    recent_done = FinishedJobFactory()
    JobRecord.objects.filter(pk__in=[old_done.pk, old_failed.pk, old_waiting.pk]).update(created_at=long_ago)

    before = (timezone.now() - dt.timedelta(days=30)).date().isoformat()
    confirm = client.post(url, {"before": before, "reason": "retention"})
    assert confirm.status_code == 200 and confirm.context["count"] == 2
    assert JobRecord.objects.count() == 4  # nothing deleted before the confirmation
    response = client.post(url, {"before": before, "reason": "retention", "confirm": "yes"})
    assert response.status_code == 302
    remaining = JobRecord.objects.exclude(job_type__in=["log_event", "audit_drain"])  # audit bookkeeping
    assert set(remaining.values_list("pk", flat=True)) == {old_waiting.pk, recent_done.pk}
    assert not JobAttempt.objects.filter(job_id=old_done.pk).exists()
    entry = LogEntry.objects.get(action_flag=DELETION)
    assert "Deleted 2 finished job records" in entry.change_message and "retention" in entry.change_message


@pytest.mark.django_db
def test_queue_operations_need_manage_queues(make_staff, admin_client_for, redis_conn):
    viewer = admin_client_for(make_staff("view", "retry", "delete"))
    assert viewer.post(reverse("admin:queues_jobrecord_pause"), {"queue": "chat"}).status_code == 403
    assert not redis_conn.exists(paused_key("chat"))
    assert viewer.post(reverse("admin:queues_jobrecord_retry_failed"), {"job_type": "test_echo"}).status_code == 403
    assert viewer.post(reverse("admin:queues_jobrecord_clean"), {"before": "2020-01-01"}).status_code == 403
    manager = admin_client_for(make_staff("view", "manage"))
    assert manager.post(reverse("admin:queues_jobrecord_pause"), {"queue": "chat"}).status_code == 302
    assert redis_conn.exists(paused_key("chat"))
    # Cleaning also needs the delete permission, retrying failed jobs the retry permission.
    assert manager.post(reverse("admin:queues_jobrecord_clean"), {"before": "2020-01-01"}).status_code == 403
    assert manager.post(reverse("admin:queues_jobrecord_retry_failed"), {"job_type": "test_echo"}).status_code == 403
    assert manager.post(reverse("admin:queues_jobrecord_pause"), {"queue": "nope"}).status_code == 302
    assert manager.get(reverse("admin:queues_jobrecord_pause")).status_code == 405
