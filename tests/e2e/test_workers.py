"""Real `manage.py rqworker` processes of the forking worker (`queues.worker.SlimyWorker`): crashes, kills and
shutdowns never lose a job. The runtime's own process tests are in test_runtime.py."""

import functools
import os
import signal
import sys
import time

import pytest

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue
from tests import processes
from tests.processes import FORKING, Proc, process_env, wait_for

start_worker = functools.partial(processes.start_worker, worker_class=FORKING)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _status(job):
    return JobRecord.objects.get(pk=job.pk).status


def _started_pid(redis_conn, tag, index=0):
    entries = redis_conn.lrange(f"test:started:{tag}", 0, -1)
    if len(entries) <= index:
        return None
    return int(entries[index].split(b":")[0])


@pytest.fixture
def env(redis_server):
    return process_env(redis_server.url, WORKER_TTL=3)


def test_job_completes_in_a_forking_worker(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "forked"})
    worker = start_worker(tmp_path, env, ["database"], burst=True, scheduler=False)
    assert worker.wait(60) == 0, worker.output()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.COMPLETED and record.result == {"echo": "forked"}
    # The runner's log lines carry the job fields.
    assert f'"job_id": "{job.pk}"' in worker.output()


def test_killed_work_horse_job_is_retried_and_completes_once(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 1.5, "tag": "horse"})
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        horse = wait_for(lambda: _started_pid(redis_conn, "horse"), message="job start")
        assert horse != worker.pid
        killed_at = time.monotonic()
        os.kill(horse, signal.SIGKILL)
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=30, message="completion after retry")
        recovery = time.monotonic() - killed_at
    finally:
        worker.stop()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.attempts == 2
    assert [a.outcome for a in record.attempt_history.all()] == ["abandoned", "completed"]
    assert redis_conn.lrange("test:done:horse", 0, -1) == [b"2"]  # side effect of one finished run
    print(f"work-horse kill → completed in {recovery:.1f} s")


def test_killed_worker_job_is_taken_over_by_another_worker(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 2, "tag": "whole"})
    first = start_worker(tmp_path, env, ["chat"], name="first")
    try:
        wait_for(lambda: _started_pid(redis_conn, "whole"), message="job start")
        killed_at = time.monotonic()
        os.killpg(first.pid, signal.SIGKILL)  # the worker and everything it runs
        first.wait(10)
        second = start_worker(tmp_path, env, ["chat"], name="second")
        reconciler = Proc(
            [sys.executable, "manage.py", "queues_reconcile", "--loop", "--interval", "1"],
            env,
            tmp_path / "reconciler.log",
        )
        try:
            # The reconciler notices the missing liveness beat (WORKER_TTL=3 s here) and, since the dead
            # worker's scheduler still holds RQ's lock, also moves the due retry to the queue.
            wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=40, message="completion")
            recovery = time.monotonic() - killed_at
        finally:
            second.stop()
            reconciler.stop()
    finally:
        first.stop()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.attempts == 2
    assert record.attempt_history.get(number=2).worker_name == "second"
    assert redis_conn.lrange("test:done:whole", 0, -1) == [b"2"]
    print(f"whole-worker kill → completed in {recovery:.1f} s")


def test_sigterm_lets_the_job_in_flight_finish(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 1.5, "tag": "graceful"})
    worker = start_worker(tmp_path, env, ["chat"])
    wait_for(lambda: _started_pid(redis_conn, "graceful"), message="job start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.COMPLETED and record.attempts == 1
    worker.stop()


def test_second_sigterm_hands_the_job_back(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 30, "tag": "cold"})
    worker = start_worker(tmp_path, env, ["chat"])
    wait_for(lambda: _started_pid(redis_conn, "cold"), message="job start")
    worker.signal(signal.SIGTERM)
    time.sleep(1.2)  # RQ ignores a second signal within 1 s of the first
    worker.signal(signal.SIGTERM)
    worker.wait(30)
    worker.stop()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.RETRYING, worker.output()
    assert record.attempt_history.get(number=1).outcome == "abandoned"


def test_poison_job_fails_after_its_attempts_and_others_keep_flowing(tmp_path, env, redis_conn):
    poison = job_enqueue(job_type="test_crash", payload={"tag": "poison"})
    fine = [job_enqueue(job_type="test_sleep", payload={"seconds": 0, "tag": f"ok{i}"}) for i in range(3)]
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        wait_for(lambda: _status(poison) == JobStatus.FAILED, timeout=30, message="poison failed")
        wait_for(lambda: all(_status(j) == JobStatus.COMPLETED for j in fine), timeout=30, message="others done")
    finally:
        worker.stop()
    record = JobRecord.objects.get(pk=poison.pk)
    assert record.attempts == 2  # its policy allows 2
    assert redis_conn.llen("test:crash:poison") == 2


@pytest.mark.parametrize("cooperative", [True, False], ids=["job-checks-cancellation", "worker-kills-horse"])
def test_cancelling_a_running_job_stops_it(tmp_path, env, redis_conn, cooperative):
    from queues.services import job_cancel

    tag = f"cancel-{cooperative}"
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 30, "tag": tag, "cooperative": cooperative})
    follower = job_enqueue(job_type="test_sleep", payload={"seconds": 0, "tag": f"after-{tag}"})
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        horse = wait_for(lambda: _started_pid(redis_conn, tag), message="job start")
        job_cancel(job=JobRecord.objects.get(pk=job.pk))
        # The worker is free again: the next job runs long before the cancelled one would have ended.
        wait_for(lambda: _status(follower) == JobStatus.COMPLETED, timeout=15, message="next job")
        with pytest.raises(ProcessLookupError):
            os.kill(horse, 0)
    finally:
        worker.stop()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.CANCELLED
    assert record.attempt_history.get(number=1).outcome == "cancelled"
    assert redis_conn.llen(f"test:done:{tag}") == 0
