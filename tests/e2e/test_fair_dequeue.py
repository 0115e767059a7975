"""Fair dequeue on real `manage.py rqworker` processes (the runtime, default settings: FAIR_QUEUES=chat,
CHAT_TENANT_CONCURRENCY=2): the per-tenant cap across processes, round-robin within priorities, cancel,
retries, the slot released after every outcome, and a worker killed with kill -9. Asserted on the ledger,
the order of starts and the fair-dequeue structures in Redis, never on how fast things were."""

import os
import signal

import pytest

from queues.constants import JobStatus, Priority, QueueName
from queues.fairness import fair_held, fair_tenant_loads, fair_waiting_ids
from queues.services import job_cancel, job_enqueue, job_retry, queue_pause, queue_resume
from tests.e2e.records import _outcomes, _record, _started, _status
from tests.processes import FORKING, process_env, start_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHAT = QueueName.CHAT


def _held(redis_conn):
    return {slot.job_id: slot for slot in fair_held(conn=redis_conn, queue=CHAT)}


def _inflight(redis_conn, tenant):
    return sum(load.inflight for load in fair_tenant_loads(conn=redis_conn, queue=CHAT) if load.tenant == tenant)


def _step(guild, tag, **payload):
    return job_enqueue(job_type="test_guild_step", payload={"guildId": guild, "tag": tag, **payload})


def _most_at_once(records):
    spans = [(r.started_at, r.finished_at) for r in records]
    return max(sum(1 for s, f in spans if s <= moment < f) for moment, _ in spans)


@pytest.fixture
def env(redis_server):
    # A slot a runtime failed to release is not freed by the reconciler's grace during these tests.
    return process_env(redis_server.url, RECONCILE_GRACE_SECONDS=3600)


def test_a_flooding_tenant_holds_at_most_its_cap_across_processes_while_another_is_served(tmp_path, env, redis_conn):
    flood = [_step("A", f"a{i}", seconds=1) for i in range(10)]
    other = _step("B", "b", seconds=0.1)
    workers = [start_worker(tmp_path, {**env, "CHAT_CONCURRENCY": "4"}, ["chat"], name=f"w{i}") for i in range(2)]
    try:
        wait_for(
            lambda: all(_status(j) == JobStatus.COMPLETED for j in flood + [other]), timeout=90, message="all jobs"
        )
    finally:
        for worker in workers:
            worker.stop()
    a_records = [_record(j) for j in flood]
    # 8 slots in two processes, but guild A never ran more than CHAT_TENANT_CONCURRENCY jobs at once ...
    assert _most_at_once(a_records) == 2
    # ... and B's job, submitted after all of A's, was among the first served: A had started at most its cap.
    order = [e.decode() for e in redis_conn.lrange("test:order", 0, -1)]
    assert order.index("b") <= 2, order
    assert _record(other).finished_at < max(r.started_at for r in a_records)
    assert _held(redis_conn) == {} and _inflight(redis_conn, "A") == 0


def test_priorities_hold_and_tenants_take_turns_within_each(tmp_path, env, redis_conn):
    plan = [
        ("x-low", "X", Priority.LOW),
        ("x-high-1", "X", Priority.HIGH),
        ("x-high-2", "X", Priority.HIGH),
        ("x-normal", "X", Priority.NORMAL),
        ("y-high", "Y", Priority.HIGH),
        ("y-low", "Y", Priority.LOW),
    ]
    jobs = [
        job_enqueue(job_type="test_guild_step", payload={"guildId": guild, "tag": tag}, priority=priority)
        for tag, guild, priority in plan
    ]
    worker = start_worker(tmp_path, {**env, "CHAT_CONCURRENCY": "1"}, ["chat"])
    try:
        wait_for(lambda: all(_status(j) == JobStatus.COMPLETED for j in jobs), timeout=60, message="all jobs")
    finally:
        worker.stop()
    order = [e.decode() for e in redis_conn.lrange("test:order", 0, -1)]
    # High before normal before low; within high, Y's turn comes before X's second job (FIFO would run
    # x-high-1, x-high-2, y-high).
    assert order == ["x-high-1", "y-high", "x-high-2", "x-normal", "x-low", "y-low"], order


def test_cancelling_a_waiting_job_takes_it_out_of_its_tenants_line(tmp_path, env, redis_conn):
    first = _step("C", "c1")
    second = _step("C", "c2")
    assert {str(first.pk), str(second.pk)} <= fair_waiting_ids(conn=redis_conn, queue=CHAT)
    job_cancel(job=_record(first))
    assert fair_waiting_ids(conn=redis_conn, queue=CHAT) == {str(second.pk)}
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        wait_for(lambda: _status(second) == JobStatus.COMPLETED, timeout=60, message="the other job")
    finally:
        worker.stop()
    assert _status(first) == JobStatus.CANCELLED and _record(first).attempts == 0
    assert _started(redis_conn, "c1") == []
    assert _held(redis_conn) == {} and _inflight(redis_conn, "C") == 0


def test_retries_and_staff_retries_wait_in_the_tenants_line(tmp_path, env, redis_conn):
    # Fails both attempts (max_attempts 2): the automatic retry, then a staff retry that succeeds.
    job = _step("R", "r", seconds=3, fail_attempts=2)
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        wait_for(lambda: len(_started(redis_conn, "r")) == 1, timeout=60, message="attempt 1")
        queue_pause(queue=CHAT)  # seen by the worker within a second, long before attempt 1 fails
        # Attempt 1 failed; its retry, once due, is released into R's line (not RQ's plain list).
        wait_for(
            lambda: str(job.pk) in fair_waiting_ids(conn=redis_conn, queue=CHAT),
            timeout=30,
            message="the retry in its tenant's line",
        )
        assert _status(job) == JobStatus.RETRYING and redis_conn.llen("rq:queue:chat") == 0
        queue_resume(queue=CHAT)
        wait_for(lambda: _status(job) == JobStatus.FAILED, timeout=60, message="attempt 2 fails")
    finally:
        worker.stop()
    job_retry(job=_record(job))
    assert str(job.pk) in fair_waiting_ids(conn=redis_conn, queue=CHAT)
    assert redis_conn.llen("rq:queue:chat") == 0
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=60, message="the staff retry")
    finally:
        worker.stop()
    assert _outcomes(job) == ["retried", "failed", "completed"]
    assert _held(redis_conn) == {} and _inflight(redis_conn, "R") == 0


def test_jobs_left_on_the_plain_list_join_their_tenants_line_and_keep_the_cap(tmp_path, env, redis_conn, settings):
    settings.FAIR_QUEUES = []  # pushed as an older version did: onto RQ's plain list
    strays = [_step("P", f"p{i}", seconds=1) for i in range(4)]
    assert redis_conn.llen("rq:queue:chat") == 4
    worker = start_worker(tmp_path, {**env, "CHAT_CONCURRENCY": "4"}, ["chat"])
    try:
        wait_for(lambda: all(_status(j) == JobStatus.COMPLETED for j in strays), timeout=60, message="the strays")
    finally:
        worker.stop()
    assert _most_at_once([_record(j) for j in strays]) == 2
    assert redis_conn.llen("rq:queue:chat") == 0 and _held(redis_conn) == {} and _inflight(redis_conn, "P") == 0


def test_the_forking_worker_serves_a_fair_queue_and_releases_its_slots(tmp_path, env, redis_conn):
    jobs = [_step("F", f"f{i}", seconds=1) for i in range(2)]
    worker = start_worker(tmp_path, env, ["chat"], name="forking", worker_class=FORKING)
    try:
        wait_for(lambda: str(jobs[0].pk) in _held(redis_conn), timeout=60, message="the first slot taken")
        assert _held(redis_conn)[str(jobs[0].pk)].worker == "forking"
        wait_for(lambda: all(_status(j) == JobStatus.COMPLETED for j in jobs), timeout=60, message="both jobs")
    finally:
        worker.stop()
    assert _held(redis_conn) == {} and _inflight(redis_conn, "F") == 0


def test_a_paused_fair_queue_is_not_popped(tmp_path, env, redis_conn):
    queue_pause(queue=CHAT)
    chat = _step("Z", "z")
    other = job_enqueue(job_type="test_echo", payload={"value": "x"})
    worker = start_worker(tmp_path, env, ["chat", "database"])
    try:
        # The database job ran: the worker has passed its pause check and popped what it may.
        wait_for(lambda: _status(other) == JobStatus.COMPLETED, timeout=60, message="the database job")
        assert _status(chat) == JobStatus.QUEUED and str(chat.pk) in fair_waiting_ids(conn=redis_conn, queue=CHAT)
        queue_resume(queue=CHAT)
        wait_for(lambda: _status(chat) == JobStatus.COMPLETED, timeout=60, message="the chat job after resume")
    finally:
        worker.stop()
    assert _held(redis_conn) == {}


@pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled", "timeout"])
def test_the_tenants_slot_is_held_while_the_job_runs_and_released_after(tmp_path, env, redis_conn, outcome):
    if outcome == "timeout":
        job = job_enqueue(job_type="test_async_timeout", payload={"seconds": 20})
        tenant = "-"  # no guild, no owner: the empty tenant has its own line
    else:
        job = _step(
            "S", "s", seconds=30 if outcome == "cancelled" else 1.5, fail_attempts=5 if outcome == "failed" else 0
        )
        tenant = "S"
    worker = start_worker(tmp_path, {**env, "CHAT_CONCURRENCY": "3"}, ["chat"], name="holder")
    try:
        wait_for(lambda: str(job.pk) in _held(redis_conn), timeout=60, message="the slot taken")
        slot = _held(redis_conn)[str(job.pk)]
        assert (slot.tenant, slot.worker) == (tenant, "holder")
        assert _inflight(redis_conn, tenant) == 1
        if outcome == "cancelled":
            wait_for(lambda: _status(job) == JobStatus.STARTED, timeout=30, message="the start")
            job_cancel(job=_record(job))
        final = {"completed": JobStatus.COMPLETED, "cancelled": JobStatus.CANCELLED}.get(outcome, JobStatus.FAILED)
        wait_for(lambda: _status(job) == final, timeout=60, message=outcome)
        wait_for(lambda: _held(redis_conn) == {}, timeout=10, message="the slot released")
    finally:
        worker.stop()
    assert _inflight(redis_conn, tenant) == 0
    if outcome == "timeout":
        assert _record(job).error_code == "JobTimeoutException"


def test_kill_9_mid_job_releases_the_slot_and_the_job_runs_once_more(tmp_path, env, redis_conn):
    job = _step("K", "k", seconds=3)
    first = start_worker(tmp_path, env, ["chat"], name="first")
    second = None
    try:
        wait_for(lambda: _started(redis_conn, "k"), timeout=60, message="start")
        assert _held(redis_conn)[str(job.pk)].worker == "first"
        second = start_worker(tmp_path, env, ["chat"], name="second")
        os.killpg(first.pid, signal.SIGKILL)
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=60, message="completion elsewhere")
        wait_for(lambda: _held(redis_conn) == {}, timeout=10, message="the slots released")
    finally:
        first.stop()
        if second:
            second.stop()
    record = _record(job)
    assert _outcomes(job) == ["abandoned", "completed"] and record.worker_name == "second"
    assert len(_started(redis_conn, "k")) == 2 and redis_conn.lrange("test:done:k", 0, -1) == [b"2"]
    assert _inflight(redis_conn, "K") == 0
