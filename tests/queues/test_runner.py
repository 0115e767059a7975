import time

import pytest
from django.utils import timezone

from queues.constants import JobStatus
from queues.models import JobAttempt, JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


def _record(job):
    return JobRecord.objects.get(pk=job.pk)


def _drain(run_worker, until, timeout=20.0):
    """Run burst workers (with the scheduler) until `until()` holds; retries wait in the scheduler."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_worker()
        if until():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def test_job_runs_to_completed_with_result_and_attempt_history(run_worker, redis_conn, user):
    job = job_enqueue(job_type="test_echo", payload={"value": "ab", "count": 2}, owner=user)
    run_worker()
    record = _record(job)
    assert record.status == JobStatus.COMPLETED
    assert record.result == {"echo": "abab"}
    assert record.attempts == 1
    assert record.started_at and record.finished_at and record.finished_at >= record.started_at
    attempts = list(record.attempt_history.all())
    assert [(a.number, a.outcome) for a in attempts] == [(1, JobAttempt.Outcome.COMPLETED)]
    assert attempts[0].worker_name
    assert redis_conn.lrange("test:ran", 0, -1) == [b"ab:1"]


def test_transient_failures_retry_with_backoff_then_complete(run_worker, redis_conn):
    job = job_enqueue(job_type="test_flaky", payload={"succeed_on": 2, "tag": "t1"})
    run_worker()
    record = _record(job)
    assert record.status == JobStatus.RETRYING
    assert record.error_message == "attempt 1 failed"
    # backoff_base=1 for this type: the next attempt is due ~1 s after the failure
    delay = (record.scheduled_for - record.attempt_history.get(number=1).finished_at).total_seconds()
    assert 0.9 <= delay <= 1.1
    _drain(run_worker, lambda: _record(job).status == JobStatus.COMPLETED)
    record = _record(job)
    assert record.result == {"succeededOn": 2}
    assert [a.outcome for a in record.attempt_history.all()] == ["retried", "completed"]


def test_transient_failures_exhaust_attempts_then_fail(run_worker, redis_conn):
    job = job_enqueue(job_type="test_flaky", payload={"succeed_on": 10, "tag": "t2"})
    _drain(run_worker, lambda: _record(job).status == JobStatus.FAILED, timeout=30)
    record = _record(job)
    assert record.attempts == 3
    assert redis_conn.lrange("test:attempts:t2", 0, -1) == [b"1", b"2", b"3"]
    assert [a.outcome for a in record.attempt_history.all()] == ["retried", "retried", "failed"]
    assert "attempt 3 failed" in record.error_message
    assert "TransientJobError" in record.error_traceback


def test_permanent_failure_is_not_retried(run_worker, redis_conn):
    job = job_enqueue(job_type="test_permanent", payload={"tag": "p"})
    run_worker()
    time.sleep(1.2)
    run_worker()
    record = _record(job)
    assert record.status == JobStatus.FAILED
    assert record.attempts == 1
    assert record.error_code == "never_works"
    assert redis_conn.lrange("test:permanent", 0, -1) == [b"1"]


def test_malformed_payload_fails_at_once_without_retry(run_worker):
    job = job_enqueue(job_type="test_echo", payload={"value": "ok"})
    JobRecord.objects.filter(pk=job.pk).update(payload={"value": ["not", "a", "string"]})
    run_worker()
    record = _record(job)
    assert record.status == JobStatus.FAILED
    assert record.attempts == 1
    assert record.error_code == "invalid_payload"


def test_unknown_job_type_fails_permanently(run_worker):
    job = job_enqueue(job_type="test_echo", payload={"value": "ok"})
    JobRecord.objects.filter(pk=job.pk).update(job_type="vanished_type")
    run_worker()
    record = _record(job)
    assert record.status == JobStatus.FAILED
    assert record.error_code == "unknown_job_type"
    assert record.attempts == 1


def test_workers_honour_priority_order(run_worker, redis_conn):
    for tag, priority in [("n1", "normal"), ("l1", "low"), ("h1", "high"), ("n2", "normal"), ("h2", "high")]:
        job_enqueue(job_type="test_record", payload={"tag": tag}, priority=priority)
    run_worker(["audit"])
    assert redis_conn.lrange("test:order", 0, -1) == [b"h1", b"h2", b"n1", b"n2", b"l1"]


def test_high_priority_of_any_queue_before_normal_of_another(run_worker, redis_conn):
    job_enqueue(job_type="test_echo", payload={"value": "normal-db"})
    job_enqueue(job_type="test_record", payload={"tag": "high-audit"}, priority="high")
    run_worker(["database", "audit"])
    assert redis_conn.lrange("test:order", 0, -1) == [b"high-audit"]
    assert JobRecord.objects.filter(status=JobStatus.COMPLETED).count() == 2


def test_delayed_job_waits_until_due(run_worker):
    job = job_enqueue(job_type="test_echo", payload={"value": "later"}, delay=1.5)
    run_worker()
    assert _record(job).status == JobStatus.SCHEDULED
    _drain(run_worker, lambda: _record(job).status == JobStatus.COMPLETED)
    record = _record(job)
    assert record.started_at >= record.created_at + timezone.timedelta(seconds=1.4)


def test_run_at_schedules_for_that_time(run_worker):
    job = job_enqueue(
        job_type="test_echo", payload={"value": "at"}, run_at=timezone.now() + timezone.timedelta(seconds=1)
    )
    assert job.status == JobStatus.SCHEDULED
    _drain(run_worker, lambda: _record(job).status == JobStatus.COMPLETED)


def test_duplicate_delivery_runs_once(run_worker, redis_conn):
    from queues.services import job_push

    job = job_enqueue(job_type="test_echo", payload={"value": "dup"})
    job_push(job=_record(job))  # the same id pushed twice (e.g. by the reconciler)
    run_worker()
    assert redis_conn.lrange("test:ran", 0, -1) == [b"dup:1"]
    assert _record(job).attempts == 1
