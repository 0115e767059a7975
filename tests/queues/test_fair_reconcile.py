"""The reconciler frees fair-dequeue slots that nobody else would: dead workers', finished jobs'."""

import pytest

from queues.constants import JobStatus
from queues.fairness import fair_held, fair_pop, fair_push
from queues.models import JobRecord
from queues.reconcile import fair_slots_reconcile, queues_reconcile
from queues.services import job_enqueue
from queues.worker import alive_key

pytestmark = pytest.mark.django_db(transaction=True)


def _take(conn, job_id, worker, tenant="A"):
    fair_push(conn=conn, queue="chat", priority="normal", tenant=tenant, job_id=job_id)
    assert fair_pop(conn=conn, queue="chat", worker=worker).job_id == job_id


def test_slots_of_a_dead_worker_are_released_and_a_live_one_keeps_its_own(redis_conn):
    redis_conn.set(alive_key("w-live"), 1, ex=60)
    _take(redis_conn, "j-dead", "w-dead")
    _take(redis_conn, "j-live", "w-live", tenant="B")
    report = fair_slots_reconcile(confirm_seconds=0, grace_seconds=3600)
    assert report.slots_released == ["worker:w-dead"]
    assert [s.job_id for s in fair_held(conn=redis_conn, queue="chat")] == ["j-live"]


def test_a_dead_worker_must_stay_missing_for_the_confirm_time(redis_conn):
    _take(redis_conn, "j1", "w-gone")
    assert fair_slots_reconcile(confirm_seconds=60, grace_seconds=3600).slots_released == []
    assert len(fair_held(conn=redis_conn, queue="chat")) == 1


def test_slot_of_a_finished_job_is_released_a_running_ones_kept(redis_conn, user):
    done = job_enqueue(job_type="test_sleep", payload={"seconds": 0, "tag": "a"}, owner=user)
    running = job_enqueue(job_type="test_sleep", payload={"seconds": 0, "tag": "b"}, owner=user)
    redis_conn.flushdb()  # their pushes to the owner's line: this test takes the slots itself
    redis_conn.set(alive_key("w1"), 1, ex=60)
    JobRecord.objects.filter(pk=done.pk).update(status=JobStatus.COMPLETED)
    JobRecord.objects.filter(pk=running.pk).update(status=JobStatus.STARTED, worker_name="w1")
    _take(redis_conn, str(done.pk), "w1")
    _take(redis_conn, str(running.pk), "w1")
    # Within the grace period nothing is touched (a popped job may not be marked started yet).
    assert fair_slots_reconcile(confirm_seconds=60, grace_seconds=3600).slots_released == []
    report = fair_slots_reconcile(confirm_seconds=60, grace_seconds=0)
    assert report.slots_released == [str(done.pk)]
    assert [s.job_id for s in fair_held(conn=redis_conn, queue="chat")] == [str(running.pk)]


def test_the_reconcile_pass_includes_the_slots(redis_conn):
    _take(redis_conn, "j-x", "w-x")
    report = queues_reconcile(confirm_seconds=0)
    assert "worker:w-x" in report.slots_released
