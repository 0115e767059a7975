"""SlimyThreadWorker: many jobs in flight in one process, same ledger outcomes, per-job timeouts."""

import time

import pytest
from rest_framework import serializers

from queues.constants import JobStatus, QueueName
from queues.definitions import JobDefinition, PermanentJobError, RetryPolicy
from queues.models import JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


class BarrierPayload(serializers.Serializer):
    key = serializers.CharField()
    parties = serializers.IntegerField(min_value=1)


class BarrierJob(JobDefinition):
    """Completes only if `parties` jobs run at the same time (each waits for all to arrive)."""

    name = "test_thread_barrier"
    queue = QueueName.CHAT
    payload_serializer = BarrierPayload
    retry = RetryPolicy(max_attempts=1)

    def run(self, payload, context):
        from queues.connections import get_connection

        conn = get_connection()
        conn.incr(payload["key"])
        deadline = time.monotonic() + 10
        while int(conn.get(payload["key"])) < payload["parties"]:
            if time.monotonic() > deadline:
                raise PermanentJobError("the others never came", code="barrier_timeout")
            time.sleep(0.02)
        return {"arrived": True}


class SpinPayload(serializers.Serializer):
    seconds = serializers.FloatField()


class SpinJob(JobDefinition):
    """Runs Python code past its 1 s timeout without cooperating."""

    name = "test_thread_spin"
    queue = QueueName.CHAT
    payload_serializer = SpinPayload
    timeout = 1
    retry = RetryPolicy(max_attempts=1)

    def run(self, payload, context):
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return {"spun": payload["seconds"]}


@pytest.fixture
def run_thread_worker():
    from queues.connections import get_connection
    from queues.threadworker import SlimyThreadWorker

    def run(queues=None, *, threads=12):
        worker = SlimyThreadWorker(queues or list(QueueName.values), connection=get_connection(), threads=threads)
        worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
        return worker

    return run


def _record(job):
    return JobRecord.objects.get(pk=job.pk)


def test_jobs_run_at_the_same_time_in_one_process(run_thread_worker, user, settings):
    settings.CHAT_TENANT_CONCURRENCY = 12  # all twelve are one user's: the fair-dequeue cap would hold 10 back
    jobs = [
        job_enqueue(job_type="test_thread_barrier", payload={"key": "barrier:a", "parties": 12}, owner=user)
        for _ in range(12)
    ]
    worker = run_thread_worker(threads=12)
    for job in jobs:
        record = _record(job)
        assert record.status == JobStatus.COMPLETED, record.error_message
        assert record.result == {"arrived": True} and record.worker_name == worker.name
        assert record.attempt_history.get().outcome == "completed"


def test_more_jobs_than_threads_all_complete(run_thread_worker, redis_conn):
    jobs = [job_enqueue(job_type="test_echo", payload={"value": f"t{i}"}) for i in range(25)]
    run_thread_worker(threads=4)
    assert all(_record(job).status == JobStatus.COMPLETED for job in jobs)
    assert redis_conn.llen("test:ran") == 25


def test_a_job_past_its_timeout_is_interrupted_and_the_thread_goes_on(run_thread_worker):
    slow = job_enqueue(job_type="test_thread_spin", payload={"seconds": 30})
    started = time.monotonic()
    run_thread_worker(threads=1)
    assert time.monotonic() - started < 20
    record = _record(slow)
    assert record.status == JobStatus.FAILED and "timeout" in record.error_message.lower()
    after = job_enqueue(job_type="test_echo", payload={"value": "next"})
    run_thread_worker(threads=1)
    assert _record(after).status == JobStatus.COMPLETED


def test_failures_and_retries_are_recorded(run_thread_worker):
    flaky = job_enqueue(job_type="test_flaky", payload={"succeed_on": 2, "tag": "thr"})
    permanent = job_enqueue(job_type="test_permanent", payload={"tag": "thr"})
    run_thread_worker()
    assert _record(flaky).status == JobStatus.RETRYING
    assert _record(permanent).status == JobStatus.FAILED and _record(permanent).error_code == "never_works"


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("cannot describe myself")


class UnprintableFailureJob(JobDefinition):
    """Fails with an exception whose message cannot even be rendered: recording the failure raises."""

    name = "test_unprintable_failure"
    queue = QueueName.CHAT
    retry = RetryPolicy(max_attempts=1)

    def run(self, payload, context):
        raise UnprintableError()


def test_an_error_escaping_the_runner_does_not_kill_the_thread(run_thread_worker):
    bad = job_enqueue(job_type="test_unprintable_failure", payload={})
    good = job_enqueue(job_type="test_echo", payload={"value": "after"})
    run_thread_worker(["chat", "database"], threads=1)
    # The job is handed back (here: its only attempt is used up) instead of staying `started`,
    # and the single thread lives on to run the next job.
    assert JobRecord.objects.get(pk=bad.pk).status == JobStatus.FAILED
    assert JobRecord.objects.get(pk=good.pk).status == JobStatus.COMPLETED
