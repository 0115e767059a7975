import time

import pytest
from rq.job import Job

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.reconcile import queues_reconcile
from queues.services import job_cancel, job_enqueue, job_retry
from queues.worker import alive_key
from slimy_site.exceptions import Conflict

pytestmark = pytest.mark.django_db(transaction=True)


def _record(job):
    return JobRecord.objects.get(pk=job.pk)


def _drain(run_worker, until, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "condition not reached"
        run_worker()
        time.sleep(0.2)


def test_cancel_queued_job_removes_it_from_redis(run_worker, redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    job_cancel(job=job)
    assert _record(job).status == JobStatus.CANCELLED
    assert not Job.exists(str(job.pk), connection=redis_conn)
    run_worker()
    assert redis_conn.llen("test:ran") == 0


def test_cancel_scheduled_job(run_worker, redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, delay=1)
    job_cancel(job=job)
    time.sleep(1.2)
    run_worker()
    assert _record(job).status == JobStatus.CANCELLED
    assert redis_conn.llen("test:ran") == 0


def test_cancel_finished_job_is_a_conflict(run_worker):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    run_worker()
    with pytest.raises(Conflict) as err:
        job_cancel(job=_record(job))
    assert err.value.code == "job_not_cancellable"


def test_cancelled_record_is_never_started_even_if_redis_still_has_it(run_worker, redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED)
    run_worker()
    assert redis_conn.llen("test:ran") == 0
    assert _record(job).attempts == 0


def test_retry_failed_job_runs_it_again_with_fresh_attempts(run_worker, redis_conn):
    job = job_enqueue(job_type="test_permanent", payload={"tag": "r"})
    run_worker()
    assert _record(job).status == JobStatus.FAILED
    job_retry(job=_record(job))
    record = _record(job)
    assert record.status == JobStatus.QUEUED and record.error_message == ""
    assert record.max_attempts == 1 + 3
    run_worker()
    record = _record(job)
    assert record.status == JobStatus.FAILED
    assert record.attempts == 2
    assert [a.number for a in record.attempt_history.all()] == [1, 2]


def test_retry_of_a_running_or_completed_job_is_refused(run_worker):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    with pytest.raises(Conflict):
        job_retry(job=job)
    run_worker()
    with pytest.raises(Conflict):
        job_retry(job=_record(job))


def test_reconciler_requeues_jobs_after_flushdb(run_worker, redis_conn):
    jobs = [job_enqueue(job_type="test_echo", payload={"value": f"v{i}"}) for i in range(5)]
    delayed = job_enqueue(job_type="test_echo", payload={"value": "delayed"}, delay=3)
    redis_conn.flushdb()
    run_worker()
    assert redis_conn.llen("test:ran") == 0
    report = queues_reconcile(grace_seconds=0)
    assert sorted(report.requeued) == sorted(str(j.pk) for j in jobs + [delayed])
    run_worker()
    assert all(_record(j).status == JobStatus.COMPLETED for j in jobs)
    assert _record(delayed).status == JobStatus.SCHEDULED
    _drain(run_worker, lambda: _record(delayed).status == JobStatus.COMPLETED)


def test_reconciler_leaves_jobs_redis_still_holds(run_worker):
    job_enqueue(job_type="test_echo", payload={"value": "x"})
    job_enqueue(job_type="test_echo", payload={"value": "y"}, delay=30)
    assert queues_reconcile(grace_seconds=0).requeued == []


def test_reconciler_respects_grace_period(redis_conn):
    job_enqueue(job_type="test_echo", payload={"value": "x"})
    redis_conn.flushdb()
    assert queues_reconcile(grace_seconds=3600).requeued == []


def test_reconciler_recovers_jobs_of_a_dead_worker(run_worker, redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "orphan"})
    # The state a worker killed mid-job leaves: record started, worker no longer beating.
    JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.STARTED, attempts=1, worker_name="gone-worker")
    record = _record(job)
    record.attempt_history.create(number=1, worker_name="gone-worker", started_at=record.created_at)
    redis_conn.set(alive_key("gone-worker"), "1")
    assert queues_reconcile(grace_seconds=0).recovered == []
    redis_conn.delete(alive_key("gone-worker"))
    report = queues_reconcile(grace_seconds=0, confirm_seconds=0)
    assert report.recovered == [str(job.pk)]
    record = _record(job)
    assert record.status == JobStatus.RETRYING
    assert record.attempt_history.get(number=1).outcome == "abandoned"
    _drain(run_worker, lambda: _record(job).status == JobStatus.COMPLETED)
    assert _record(job).attempts == 2


def test_a_vanished_liveness_key_is_only_suspected_until_confirmed(redis_conn):
    # What FLUSHALL does to a live worker: its key is gone until its next beat.
    job = job_enqueue(job_type="test_echo", payload={"value": "busy"})
    JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.STARTED, attempts=1, worker_name="busy-worker")
    record = _record(job)
    record.attempt_history.create(number=1, worker_name="busy-worker", started_at=record.created_at)
    assert queues_reconcile(grace_seconds=3600, confirm_seconds=1).recovered == []
    redis_conn.set(alive_key("busy-worker"), "1")  # the next beat
    time.sleep(1.1)
    assert queues_reconcile(grace_seconds=3600, confirm_seconds=1).recovered == []  # the beat cleared it
    redis_conn.delete(alive_key("busy-worker"))  # now it really stops beating
    assert queues_reconcile(grace_seconds=3600, confirm_seconds=1).recovered == []
    time.sleep(1.1)
    assert queues_reconcile(grace_seconds=3600, confirm_seconds=1).recovered == [str(job.pk)]
    assert _record(job).status == JobStatus.RETRYING


def test_reconciler_requeues_a_waiting_job_held_only_by_a_dead_workers_stale_entry(run_worker, redis_conn):
    from queues.connections import get_rq_queue

    job = job_enqueue(job_type="test_echo", payload={"value": "stale"})
    queue = get_rq_queue("database")
    # What a worker that died with Redis leaves: popped from the list, still in the started registry.
    redis_conn.lrem(queue.key, 0, str(job.pk))
    redis_conn.zadd(queue.started_job_registry.key, {f"{job.pk}:exec": time.time() + 600})
    redis_conn.hset(f"rq:job:{job.pk}", "worker_name", "dead-worker")
    redis_conn.set(alive_key("dead-worker"), "1")
    assert queues_reconcile(grace_seconds=0).requeued == []  # its worker lives: it is about to start it
    redis_conn.delete(alive_key("dead-worker"))
    assert queues_reconcile(grace_seconds=0).requeued == [str(job.pk)]
    _drain(run_worker, lambda: _record(job).status == JobStatus.COMPLETED)


def test_abandoned_job_without_attempts_left_fails(redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "orphan"})
    JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.STARTED, attempts=3, worker_name="gone")
    record = _record(job)
    record.attempt_history.create(number=3, worker_name="gone", started_at=record.created_at)
    queues_reconcile(grace_seconds=0, confirm_seconds=0)
    record = _record(job)
    assert record.status == JobStatus.FAILED
    assert "stopped beating" in record.error_message


def test_reconciler_moves_overdue_scheduled_jobs_when_no_scheduler_runs(redis_conn):
    from queues.connections import get_rq_queue

    job = job_enqueue(job_type="test_echo", payload={"value": "late"}, delay=1)
    time.sleep(1.2)
    assert queues_reconcile(grace_seconds=3600).released == []  # within the lag RQ's scheduler may still act
    time.sleep(4.2)  # due time is rounded up to a whole second, plus the 3 s lag
    report = queues_reconcile(grace_seconds=3600)
    assert report.released == [str(job.pk)]
    assert get_rq_queue("database").job_ids == [str(job.pk)]
    assert queues_reconcile(grace_seconds=3600).released == []


def test_delete_from_redis_of_a_running_job_closes_its_attempt(redis_conn):
    from queues.services import job_delete_from_redis, job_start

    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    job_start(job_id=job.pk, worker_name="gone")
    job_delete_from_redis(job=_record(job))
    record = _record(job)
    assert record.status == JobStatus.CANCELLED
    assert record.attempt_history.get(number=1).outcome == "cancelled"
    assert not Job.exists(str(job.pk), connection=redis_conn)


def test_a_dead_workers_job_is_pushed_again_at_once_without_back_off(redis_conn):
    from queues.connections import get_rq_queue

    job = job_enqueue(job_type="test_echo", payload={"value": "taken over"})
    get_rq_queue("database").empty()  # a worker popped it ...
    JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.STARTED, attempts=1, worker_name="killed")
    record = _record(job)
    record.attempt_history.create(number=1, worker_name="killed", started_at=record.created_at)
    # ... and was killed: no liveness key.
    assert queues_reconcile(grace_seconds=3600, confirm_seconds=0).recovered == [str(job.pk)]
    record = _record(job)
    assert record.status == JobStatus.RETRYING and record.scheduled_for <= record.updated_at
    # On its queue now, not in the scheduled registry behind the retry policy's 2 s back-off.
    assert get_rq_queue("database").job_ids == [str(job.pk)]
    assert [a.outcome for a in record.attempt_history.all()] == ["abandoned"]


def _dead_worker_holds(job, worker="gone-worker"):
    JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.STARTED, attempts=1, worker_name=worker)
    record = _record(job)
    record.attempt_history.create(number=1, worker_name=worker, started_at=record.created_at)


@pytest.mark.parametrize("job_type", ["test_echo", "test_sleep"])  # a plain queue and a fair (chat) queue
def test_a_dead_workers_job_goes_back_first_in_line(job_type, redis_conn):
    from queues.connections import get_rq_queue
    from queues.fairness import fair_pop
    from queues.services.fair import queue_is_fair

    payload = {"value": "x"} if job_type == "test_echo" else {"seconds": 0}
    orphan = job_enqueue(job_type=job_type, payload=payload)
    later = [job_enqueue(job_type=job_type, payload=payload) for _ in range(3)]
    queue = orphan.queue
    # The orphan was popped by a worker that then died; the jobs submitted after it are still waiting.
    if queue_is_fair(queue):
        assert fair_pop(conn=redis_conn, queue=queue, worker="gone-worker").job_id == str(orphan.pk)
    else:
        assert get_rq_queue(queue).pop_job_id() == str(orphan.pk)
    _dead_worker_holds(orphan)

    assert queues_reconcile(grace_seconds=3600, confirm_seconds=0).recovered == [str(orphan.pk)]

    # It runs next, before the jobs that came after it (not at the back of the line again).
    if queue_is_fair(queue):
        popped = [fair_pop(conn=redis_conn, queue=queue, worker="w", cap=10).job_id for _ in range(4)]
    else:
        popped = [get_rq_queue(queue).pop_job_id() for _ in range(4)]
    assert popped == [str(orphan.pk)] + [str(j.pk) for j in later]
