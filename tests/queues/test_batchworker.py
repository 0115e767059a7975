"""SlimyBatchWorker (now the worker runtime, in-process): the same ledger outcomes as the stock workers,
short jobs a batch at a time."""

import time

import pytest
from rest_framework import serializers
from rq import Queue
from rq.job import Job

from queues.constants import JobStatus, QueueName
from queues.definitions import JobDefinition, RetryPolicy
from queues.models import JobAttempt, JobRecord
from queues.services import job_cancel, job_enqueue, job_push

pytestmark = pytest.mark.django_db(transaction=True)


class SlowPayload(serializers.Serializer):
    seconds = serializers.FloatField()


class SlowJob(JobDefinition):
    """Sleeps without cooperating: only the hard timeout can stop it."""

    name = "test_batch_slow"
    queue = QueueName.DATABASE
    payload_serializer = SlowPayload
    timeout = 1
    retry = RetryPolicy(max_attempts=1)

    def run(self, payload, context):
        # Python code that never checks for cancellation. (A single call blocked in C, such as one long
        # sleep, would return first: the runtime interrupts threads, it cannot use SIGALRM.)
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return {"slept": payload["seconds"]}


@pytest.fixture
def run_batch_worker():
    from queues.batchworker import SlimyBatchWorker
    from queues.connections import get_connection

    def run(queues=None, *, with_scheduler=True, max_jobs=None):
        worker = SlimyBatchWorker(queues or list(QueueName.values), connection=get_connection())
        worker.work(burst=True, with_scheduler=with_scheduler, max_jobs=max_jobs, logging_level="WARNING")
        return worker

    return run


def _record(job):
    return JobRecord.objects.get(pk=job.pk)


def test_batch_completes_every_job_with_result_and_attempt_rows(run_batch_worker, redis_conn, user):
    jobs = [job_enqueue(job_type="test_echo", payload={"value": f"v{i}"}, owner=user) for i in range(30)]
    worker = run_batch_worker()
    for i, job in enumerate(jobs):
        record = _record(job)
        assert record.status == JobStatus.COMPLETED and record.result == {"echo": f"v{i}"}
        assert record.attempts == 1 and record.worker_name == worker.name
        assert record.started_at <= record.finished_at
        assert [(a.number, a.outcome) for a in record.attempt_history.all()] == [(1, "completed")]
    assert redis_conn.llen("test:ran") == 30
    # The ledger holds the outcome; RQ's copies of the jobs are gone, and the batches grew past one job.
    assert not any(redis_conn.exists(Job.key_for(str(job.pk))) for job in jobs)
    assert int(redis_conn.hget(worker.key, "successful_job_count")) == 30
    assert worker.lanes[QueueName.DATABASE].batch_size() > 1


def test_none_result_is_stored_as_null(run_batch_worker):
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 0})
    run_batch_worker()
    assert _record(job).result == {"slept": 0.0}


def test_transient_failure_is_retried_through_the_scheduler_then_completes(run_batch_worker, redis_conn):
    job = job_enqueue(job_type="test_flaky", payload={"succeed_on": 2, "tag": "bw"})
    run_batch_worker()
    record = _record(job)
    assert record.status == JobStatus.RETRYING and record.error_message == "attempt 1 failed"
    assert str(job.pk) in Queue("database", connection=redis_conn).scheduled_job_registry.get_job_ids()
    deadline = time.monotonic() + 15
    while _record(job).status != JobStatus.COMPLETED and time.monotonic() < deadline:
        time.sleep(0.3)
        run_batch_worker()
    record = _record(job)
    assert record.status == JobStatus.COMPLETED and record.result == {"succeededOn": 2}
    assert [a.outcome for a in record.attempt_history.all()] == ["retried", "completed"]


def test_permanent_failure_fails_at_once_and_the_batch_goes_on(run_batch_worker, redis_conn):
    bad = job_enqueue(job_type="test_permanent", payload={"tag": "p"})
    good = job_enqueue(job_type="test_echo", payload={"value": "after"})
    run_batch_worker()
    record = _record(bad)
    assert record.status == JobStatus.FAILED and record.error_code == "never_works" and record.attempts == 1
    assert record.attempt_history.get().outcome == JobAttempt.Outcome.FAILED
    assert _record(good).status == JobStatus.COMPLETED


def test_hard_timeout_stops_a_job_that_does_not_cooperate(run_batch_worker):
    job = job_enqueue(job_type="test_batch_slow", payload={"seconds": 5})
    started = time.monotonic()
    run_batch_worker()
    assert time.monotonic() - started < 4
    record = _record(job)
    assert record.status == JobStatus.FAILED
    assert "timeout" in record.error_message.lower()


def test_high_priority_lists_are_drained_first(run_batch_worker, redis_conn):
    for priority in ("low", "normal", "high"):
        for i in range(3):
            job_enqueue(job_type="test_record", payload={"tag": f"{priority}{i}"}, priority=priority)
    run_batch_worker([QueueName.AUDIT])
    order = [t.decode() for t in redis_conn.lrange("test:order", 0, -1)]
    assert order == ["high0", "high1", "high2", "normal0", "normal1", "normal2", "low0", "low1", "low2"]


def test_a_cancelled_job_delivered_again_is_skipped(run_batch_worker, redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "never"})
    job_cancel(job=_record(job))
    job_push(job=_record(job))  # a duplicate delivery (e.g. the reconciler raced the cancel)
    run_batch_worker()
    assert _record(job).status == JobStatus.CANCELLED
    assert redis_conn.llen("test:ran") == 0


def test_a_job_cancelled_while_its_batch_runs_keeps_cancelled(run_batch_worker, redis_conn):
    from queues.services.batch import job_complete_batch, job_start_batch

    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    [started] = job_start_batch(job_ids=[str(job.pk)], worker_name="w")
    job_cancel(job=_record(job))
    assert job_complete_batch(outcomes=[(started, {"echo": "x"})]) == set()
    record = _record(job)
    assert record.status == JobStatus.CANCELLED and record.result is None
    assert record.attempt_history.get().outcome == JobAttempt.Outcome.CANCELLED


def test_start_batch_takes_only_waiting_records_once(run_batch_worker):
    from queues.services.batch import job_start_batch

    jobs = [job_enqueue(job_type="test_echo", payload={"value": str(i)}) for i in range(3)]
    ids = [str(j.pk) for j in jobs]
    first = job_start_batch(job_ids=ids, worker_name="a")
    assert [str(j.pk) for j in first] == ids and all(j.status == "started" and j.attempts == 1 for j in first)
    assert job_start_batch(job_ids=ids, worker_name="b") == []  # a second delivery starts nothing
    assert JobAttempt.objects.filter(job_id__in=ids).count() == 3


def test_a_paused_queue_is_left_alone_until_resumed(run_batch_worker, redis_conn):
    from queues.worker import paused_key

    held = job_enqueue(job_type="test_record", payload={"tag": "held"})  # audit queue
    other = job_enqueue(job_type="test_echo", payload={"value": "runs"})  # database queue
    redis_conn.set(paused_key(QueueName.AUDIT), "1")
    run_batch_worker()
    assert _record(held).status == JobStatus.QUEUED and _record(other).status == JobStatus.COMPLETED
    redis_conn.delete(paused_key(QueueName.AUDIT))
    run_batch_worker()
    assert _record(held).status == JobStatus.COMPLETED


def test_without_lmpop_an_older_redis_is_served_too(run_batch_worker, redis_conn, monkeypatch):
    from queues.batchworker import SlimyBatchWorker

    async def without_lmpop(self):
        return False

    monkeypatch.setattr(SlimyBatchWorker, "_supports_lmpop", without_lmpop)
    for priority in ("low", "high"):
        job_enqueue(job_type="test_record", payload={"tag": priority}, priority=priority)
    jobs = [job_enqueue(job_type="test_echo", payload={"value": str(i)}) for i in range(5)]
    run_batch_worker()
    assert all(_record(job).status == JobStatus.COMPLETED for job in jobs)
    assert [t.decode() for t in redis_conn.lrange("test:order", 0, -1)] == ["high", "low"]


def test_a_start_spends_no_more_slots_than_it_is_given_and_defers_the_rest_in_order():
    from queues.services.batch import job_start_delivery

    def sleeper(tag):
        return str(job_enqueue(job_type="test_db_sleep", payload={"seconds": 0, "tag": tag}).pk)

    def echo(value):
        return str(job_enqueue(job_type="test_echo", payload={"value": value}).pk)

    heavy = ["test_db_sleep"]
    # Inline jobs share one slot, each heavy job takes one: with 3 slots, [e, h, h] start and the rest wait.
    ids = [echo("1"), sleeper("a"), echo("2"), sleeper("b"), sleeper("c"), echo("3")]
    started, deferred = job_start_delivery(job_ids=ids, worker_name="w", heavy_types=heavy, heavy_limit=3)
    assert [str(j.pk) for j in started] == ids[:4] and all(j.status == "started" for j in started)
    assert deferred == ids[4:]
    assert [JobRecord.objects.get(pk=i).status for i in deferred] == [JobStatus.QUEUED] * 2
    # A heavy job first in line with one slot: it starts, and every job behind it waits.
    ids = [sleeper("d"), echo("4"), echo("5")]
    started, deferred = job_start_delivery(job_ids=ids, worker_name="w", heavy_types=heavy, heavy_limit=1)
    assert [str(j.pk) for j in started] == ids[:1] and deferred == ids[1:]
    # Without a limit every waiting id starts; ids not waiting are in neither list.
    started, deferred = job_start_delivery(job_ids=ids + ids[:1], worker_name="w", heavy_types=heavy)
    assert [str(j.pk) for j in started] == ids[1:] and deferred == []


def test_inline_batches_run_beyond_the_slots_but_share_one_with_blocking_jobs(redis_conn):
    from queues.batchworker import SlimyBatchWorker
    from queues.connections import get_connection

    sleepers = [job_enqueue(job_type="test_db_sleep", payload={"seconds": 0.3, "tag": f"s{i}"}) for i in range(3)]
    echoes = [job_enqueue(job_type="test_echo", payload={"value": str(i)}) for i in range(60)]
    for i, sleeper in enumerate(sleepers):  # spread them out among the short jobs
        redis_conn.lrem("rq:queue:database", 1, str(sleeper.pk))
        redis_conn.linsert("rq:queue:database", "BEFORE", str(echoes[20 * i + 10].pk), str(sleeper.pk))
    worker = SlimyBatchWorker([QueueName.DATABASE], connection=get_connection(), concurrency={"database": 1})
    worker.work(burst=True, logging_level="WARNING")
    records = [_record(j) for j in sleepers + echoes]
    assert all(r.status == JobStatus.COMPLETED for r in records)
    # Short jobs ran in batches larger than the one slot (a batch starts in one statement: one start time)...
    batches = {}
    for record in records[len(sleepers) :]:
        batches.setdefault(record.started_at, []).append(record)
    assert max(len(batch) for batch in batches.values()) > 1
    # ...yet with one slot, nothing ran beside a blocking job: no batch overlaps a sleeper.
    for sleeper in records[: len(sleepers)]:
        for batch in batches.values():
            start, end = batch[0].started_at, max(r.finished_at for r in batch)
            assert end <= sleeper.started_at or start >= sleeper.finished_at


def test_a_job_from_the_blocking_pop_reaches_its_handler_before_the_loop_pops_again(redis_conn, monkeypatch, settings):
    # The pickup path: an idle lane starts what the blocking pop took, and runs it up to its handler, before
    # the loop's next pass (its LMPOP) competes with it for the GIL. The start and the runner's preparation
    # are held back here: the loop's next pop must still wait for them.
    import threading

    from queues import runner
    from queues.batchworker import SlimyBatchWorker
    from queues.connections import get_connection
    from queues.workers import runtime

    settings.WORKER_RECONCILER = False
    monkeypatch.setattr(runtime, "BEGUN_WAIT_SECONDS", 60)  # only a lane that never answers ends the wait
    monkeypatch.setattr(runtime, "BLOCK_SECONDS", 5)  # no pass of its own while the job is pushed

    def lmpops():
        stats = redis_conn.info("commandstats").get("cmdstat_lmpop")
        return stats["calls"] if stats else 0

    counts = {}
    start = runtime.job_start_delivery

    def slow_start(**kwargs):
        time.sleep(0.3)
        try:
            return start(**kwargs)
        finally:
            counts["started"] = lmpops()

    prepare = runner._prepare

    def slow_prepare(*args, **kwargs):
        time.sleep(0.3)
        try:
            return prepare(*args, **kwargs)
        finally:
            counts["prepared"] = lmpops()

    monkeypatch.setattr(runtime, "job_start_delivery", slow_start)
    monkeypatch.setattr(runner, "_prepare", slow_prepare)
    # Slots to spare: a queue with none left would not be popped again until the job is done anyway.
    worker = SlimyBatchWorker([QueueName.DATABASE], connection=get_connection(), concurrency={"database": 4})
    jobs = []

    def submit_while_blocked():
        deadline = time.monotonic() + 30
        try:
            while not any(c.get("cmd") == "blmpop" for c in redis_conn.client_list()):
                assert time.monotonic() < deadline, "the worker never blocked"
                time.sleep(0.01)
            counts["pushed"] = lmpops()
            jobs.append(job_enqueue(job_type="test_echo", payload={"value": "x"}))
            while _record(jobs[0]).status != JobStatus.COMPLETED and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            worker.request_stop()

    submitter = threading.Thread(target=submit_while_blocked)
    submitter.start()
    worker.work(logging_level="WARNING")
    submitter.join()
    assert _record(jobs[0]).status == JobStatus.COMPLETED
    assert counts["started"] == counts["pushed"], "the loop popped again while the lane was starting the job"
    assert counts["prepared"] == counts["pushed"], "the loop popped again before the job's handler started"
