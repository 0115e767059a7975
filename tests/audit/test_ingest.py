"""Writing events: audit_event_record, log_event grouping, log_events_bulk, no loss or doubles."""

import os
import subprocess
import sys
import threading
import uuid

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test import RequestFactory
from prometheus_client import REGISTRY

from audit.chain import chain_verify
from audit.jobs import LogEventJob
from audit.models import AuditLog
from audit.services import audit_event_record, audit_events_bulk_run
from queues.models import JobAttempt, JobRecord
from queues.services import job_enqueue
from tests.factories.audit import EventFactory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _failed_enqueues():
    return REGISTRY.get_sample_value("slimy_audit_events_failed_total", {"stage": "enqueue"}) or 0


def _written():
    return REGISTRY.get_sample_value("slimy_audit_events_written_total") or 0


@pytest.mark.django_db(transaction=True)
def test_recorded_event_is_written_by_the_worker_with_request_context(run_worker, user):
    request = RequestFactory().post("/x", HTTP_USER_AGENT="Mozilla/5.0 test", REMOTE_ADDR="10.1.2.3")
    request.user, request.request_id = user, "req-123"
    before = _written()
    with transaction.atomic():
        audit_event_record(action="conversation.create", resource_type="conversation", resource_id=42,
                           details={"title": "hi", "api_key": "k"}, request=request)
    job = JobRecord.objects.get(job_type="log_event")
    assert job.payload["details"] == {"title": "hi", "api_key": "[redacted]"}  # redacted before enqueueing
    run_worker(["audit"])
    row = AuditLog.objects.get()
    assert (row.action, row.resource_type, row.resource_id) == ("conversation.create", "conversation", "42")
    assert (row.actor_id, row.actor_ref, row.actor_label) == (user.pk, user.pk, "alice")
    assert (row.ip, row.user_agent, row.request_id) == ("10.1.2.3", "Mozilla/5.0 test", "req-123")
    assert row.details == {"title": "hi", "api_key": "[redacted]"}
    assert JobRecord.objects.get(pk=job.pk).status == "completed"
    assert _written() == before + 1


@pytest.mark.django_db(transaction=True)
def test_event_of_a_rolled_back_transaction_is_not_recorded(run_worker):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            audit_event_record(action="thing.delete")
            raise RuntimeError("the caller's change failed")
    run_worker(["audit"])
    assert not JobRecord.objects.exists() and not AuditLog.objects.exists()


@pytest.mark.django_db
def test_enqueue_failure_is_counted_and_never_raised_nor_breaks_the_callers_transaction(user):
    before = _failed_enqueues()
    with transaction.atomic():
        audit_event_record(action="x" * 500)  # invalid: too long
        audit_event_record(action="ok", details={"n": float("inf")})  # invalid details
        user.first_name = "Still"
        user.save()  # the caller's transaction is still usable
    assert _failed_enqueues() == before + 2
    assert not JobRecord.objects.exists()


@pytest.mark.django_db
def test_database_failure_is_counted_and_rolled_back_to_a_savepoint(user):
    before = _failed_enqueues()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("LOCK TABLE queues_jobrecord IN ACCESS SHARE MODE")
            cursor.execute("SET LOCAL lock_timeout = '1ms'")
            cursor.execute("ALTER TABLE queues_jobrecord ADD CONSTRAINT audit_test_no_jobs CHECK (false) NOT VALID")
        audit_event_record(action="blocked")  # the INSERT violates the constraint: an IntegrityError
        user.last_name = "Ok"
        user.save()
    assert _failed_enqueues() == before + 1
    user.refresh_from_db()
    assert user.last_name == "Ok"


@pytest.mark.django_db(transaction=True)
def test_waiting_log_event_jobs_are_grouped_into_one_bulk_write(run_worker):
    with transaction.atomic():
        for n in range(40):
            audit_event_record(action="grouped", resource_id=str(n))
    run_worker(["audit"])
    assert AuditLog.objects.count() == 40
    assert sorted(AuditLog.objects.values_list("resource_id", flat=True)) == sorted(str(n) for n in range(40))
    jobs = list(JobRecord.objects.filter(job_type="log_event"))
    assert {j.status for j in jobs} == {"completed"}
    leaders = [j for j in jobs if j.result and "grouped" in j.result]
    assert len(leaders) == 1 and leaders[0].result == {"written": 40, "grouped": 39}
    followers = [j for j in jobs if j.result and "groupedInto" in j.result]
    assert len(followers) == 39 and {j.result["groupedInto"] for j in followers} == {str(leaders[0].pk)}
    assert JobAttempt.objects.filter(outcome="completed").count() == 40
    assert chain_verify().ok


@pytest.mark.django_db
def test_bulk_write_skips_events_already_stored_and_duplicates_within_the_batch():
    events = [LogEventJob.validate(EventFactory()) for _ in range(5)]
    with transaction.atomic():
        first = audit_events_bulk_run(events=events[:3] + [events[0]])
    with transaction.atomic():
        second = audit_events_bulk_run(events=events)  # a retry that also carries two new events
    assert first == {"received": 4, "written": 3, "duplicates": 1}
    assert second == {"received": 5, "written": 2, "duplicates": 3}
    assert AuditLog.objects.count() == 5 and chain_verify().ok


@pytest.mark.django_db(transaction=True)
def test_bulk_job_and_its_retry_write_each_event_once(run_worker, staff):
    events = [dict(EventFactory(), eventId=str(uuid.uuid4())) for _ in range(300)]
    job_enqueue(job_type="log_events_bulk", payload={"events": events})
    job_enqueue(job_type="log_events_bulk", payload={"events": events[:150]})  # a producer's retry
    run_worker(["audit"])
    assert AuditLog.objects.count() == 300
    results = sorted(j.result["written"] for j in JobRecord.objects.filter(job_type="log_events_bulk"))
    assert results == [0, 300] or results == [150, 150]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_keep_one_chain_and_lose_nothing():
    from audit.services import audit_events_write

    batches = [[LogEventJob.validate(EventFactory()) for _ in range(50)] for _ in range(6)]
    errors = []

    def write(batch):
        try:
            with transaction.atomic():
                audit_events_write(events=batch)
                audit_events_write(events=batch[:10])  # replayed part: nothing new
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert AuditLog.objects.count() == 300
    report = chain_verify()
    assert report.ok and report.checked == 300


@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_group_without_losing_or_doubling_events():
    with transaction.atomic():
        for n in range(400):
            audit_event_record(action="load", resource_id=str(n))
    db = settings.DATABASES["default"]
    env = dict(os.environ, DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
               REDIS_URL=settings.REDIS_URL, EXTRA_JOB_MODULES="tests.jobs", RQ_LOG_LEVEL="ERROR", LOG_LEVEL="ERROR")
    cmd = [sys.executable, "manage.py", "rqworker", "audit", "--burst",
           "--worker-class", "queues.worker.SlimySimpleWorker"]
    workers = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()[-2000:]
    ids = list(AuditLog.objects.values_list("resource_id", flat=True))
    assert len(ids) == 400 and set(ids) == {str(n) for n in range(400)}
    assert set(JobRecord.objects.values_list("status", flat=True)) == {"completed"}
    assert chain_verify().ok
