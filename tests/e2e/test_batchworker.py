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
    reconciler = Proc([sys.executable, "manage.py", "queues_reconcile", "--loop", "--interval", "1"], env,
                      tmp_path / "reconciler.log")
    try:
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=40, message="completion")
    finally:
        second.stop()
        reconciler.stop()
    record = JobRecord.objects.get(pk=job.pk)
    assert [a.outcome for a in record.attempt_history.all()] == ["abandoned", "completed"]
    assert record.attempt_history.get(number=2).worker_name == "bsecond"
