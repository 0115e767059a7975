"""`manage.py rqworker --worker-class queues.batchworker.SlimyBatchWorker` as a real process."""

import os
import signal
import time

import pytest

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue
from tests.processes import process_env, start_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BATCH = "queues.batchworker.SlimyBatchWorker"


@pytest.fixture
def env(redis_server):
    return process_env(redis_server.url, WORKER_TTL=3, RQ_WORKER_CLASS=BATCH)


def _status(job):
    return JobRecord.objects.get(pk=job.pk).status


def test_jobs_submitted_while_it_waits_are_picked_up(tmp_path, env, redis_conn):
    worker = start_worker(tmp_path, env, ["database", "chat"])
    try:
        time.sleep(1.5)  # blocked in BLMPOP
        jobs = [job_enqueue(job_type="test_echo", payload={"value": f"e{i}"}) for i in range(20)]
        wait_for(lambda: all(_status(j) == JobStatus.COMPLETED for j in jobs), timeout=30, message="completion")
    finally:
        worker.stop()
    assert redis_conn.llen("test:ran") == 20
    assert worker.wait(10) == 0


def test_sigterm_lets_the_batch_finish(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 1.5, "tag": "bgraceful"})
    worker = start_worker(tmp_path, env, ["chat"])
    wait_for(lambda: redis_conn.llen("test:started:bgraceful"), message="job start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    worker.stop()
    assert _status(job) == JobStatus.COMPLETED


def test_second_sigterm_hands_the_started_jobs_back(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 30, "tag": "bcold", "cooperative": False})
    worker = start_worker(tmp_path, env, ["chat"])
    wait_for(lambda: redis_conn.llen("test:started:bcold"), message="job start")
    worker.signal(signal.SIGTERM)
    time.sleep(1.2)  # RQ ignores a second signal within 1 s of the first
    worker.signal(signal.SIGTERM)
    worker.wait(30)
    worker.stop()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.RETRYING, worker.output()
    assert record.attempt_history.get(number=1).outcome == "abandoned"


def test_killed_worker_job_is_recovered_by_the_reconciler(tmp_path, env, redis_conn):
    import sys

    from tests.processes import Proc

    job = job_enqueue(job_type="test_sleep", payload={"seconds": 2, "tag": "bkill"})
    first = start_worker(tmp_path, env, ["chat"], name="bfirst")
    wait_for(lambda: redis_conn.llen("test:started:bkill"), message="job start")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    first.stop()
    second = start_worker(tmp_path, env, ["chat"], name="bsecond")
    reconciler = Proc(
        [sys.executable, "manage.py", "queues_reconcile", "--loop", "--interval", "1"], env, tmp_path / "reconciler.log"
    )
    try:
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=40, message="completion")
    finally:
        second.stop()
        reconciler.stop()
    record = JobRecord.objects.get(pk=job.pk)
    assert [a.outcome for a in record.attempt_history.all()] == ["abandoned", "completed"]
    assert record.attempt_history.get(number=2).worker_name == "bsecond"


def test_thread_worker_cold_shutdown_hands_back_every_job_in_flight(tmp_path, redis_server, redis_conn):
    # The three jobs are one tenant's: lift the chat queue's per-tenant cap (2) so that all three run.
    env = process_env(
        redis_server.url,
        WORKER_TTL=3,
        RQ_WORKER_CLASS="queues.threadworker.SlimyThreadWorker",
        WORKER_THREADS=4,
        CHAT_TENANT_CONCURRENCY=4,
    )
    jobs = [
        job_enqueue(job_type="test_sleep", payload={"seconds": 30, "tag": f"tcold{i}", "cooperative": False})
        for i in range(3)
    ]
    worker = start_worker(tmp_path, env, ["chat"])
    try:  # a worker left running would take the jobs of every later test
        wait_for(lambda: all(redis_conn.llen(f"test:started:tcold{i}") for i in range(3)), message="jobs start")
        pids = {redis_conn.lrange(f"test:started:tcold{i}", 0, -1)[0].split(b":")[0] for i in range(3)}
        assert pids == {str(worker.pid).encode()}  # all three in the worker process itself
        worker.signal(signal.SIGTERM)
        time.sleep(1.2)
        worker.signal(signal.SIGTERM)
        worker.wait(30)
    finally:
        worker.stop()
    for job in jobs:
        record = JobRecord.objects.get(pk=job.pk)
        assert record.status == JobStatus.RETRYING, worker.output()
        assert record.attempt_history.get(number=1).outcome == "abandoned"
