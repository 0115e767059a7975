"""The worker runtime on real `manage.py rqworker` processes: slots, priorities, timeouts, the fence,
takeover and shutdown. Guarantees are asserted on what the ledger and the output log record, never on
how fast things were (the seconds printed are for the reader)."""

import os
import signal
import time

import pytest

from queues.constants import JobStatus, Priority
from queues.output import output_read_all
from queues.services import job_cancel, job_enqueue, job_retry, queue_pause, queue_resume
from tests.e2e.records import _outcomes, _record, _started, _status
from tests.processes import process_env, start_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def env(redis_server):
    # The defaults under test (WORKER_TTL, RECONCILE_INTERVAL, ...) are the settings' own.
    return process_env(redis_server.url)


def test_one_process_serves_every_queue_and_a_slow_job_holds_one_slot_of_its_own_queue(tmp_path, env, redis_conn):
    # 6 s (not 2): room for the other queues' jobs on a loaded machine; the assertions are about overlap.
    sleepers = [job_enqueue(job_type="test_db_sleep", payload={"seconds": 6, "tag": f"db{i}"}) for i in range(10)]
    worker = start_worker(tmp_path, {**env, "DATABASE_CONCURRENCY": "10"})
    try:
        wait_for(lambda: all(_started(redis_conn, f"db{i}") for i in range(10)), timeout=30, message="sleepers")
        # While ten database slots sleep, audit and chat jobs flow through the same process.
        others = [job_enqueue(job_type="test_record", payload={"tag": f"a{i}"}) for i in range(5)]
        others += [job_enqueue(job_type="test_async_sleep", payload={"seconds": 0.1, "tag": f"c{i}"}) for i in range(3)]
        wait_for(
            lambda: all(_status(j) == JobStatus.COMPLETED for j in sleepers + others), timeout=60, message="all jobs"
        )
    finally:
        worker.stop()
    sleeps = [_record(j) for j in sleepers]
    # All ten ran at the same time (each started before any finished), in one process.
    assert max(r.started_at for r in sleeps) < min(r.finished_at for r in sleeps)
    assert len({r.worker_name for r in sleeps}) == 1
    assert len({_started(redis_conn, f"db{i}")[0].split(":")[0] for i in range(10)}) == 1
    # The others finished while the database slots were still taken.
    assert max(_record(j).finished_at for j in others) < min(r.finished_at for r in sleeps)
    print(
        f"10 x 6 s database jobs: {(max(r.finished_at for r in sleeps) - min(r.started_at for r in sleeps)).total_seconds():.2f} s"
    )


def test_a_queue_never_runs_more_jobs_than_its_slots(tmp_path, env, redis_conn):
    jobs = [job_enqueue(job_type="test_db_sleep", payload={"seconds": 0.5, "tag": f"s{i}"}) for i in range(6)]
    worker = start_worker(tmp_path, {**env, "DATABASE_CONCURRENCY": "2"})
    try:
        wait_for(lambda: all(_status(j) == JobStatus.COMPLETED for j in jobs), timeout=60, message="all jobs")
    finally:
        worker.stop()
    spans = [(r.started_at, r.finished_at) for r in map(_record, jobs)]
    most = max(sum(1 for s, f in spans if s <= moment < f) for moment, _ in spans)
    assert most == 2


def test_priorities_hold_inside_a_queue(tmp_path, env, redis_conn):
    for tag, priority in [
        ("low-1", Priority.LOW),
        ("normal-1", Priority.NORMAL),
        ("high-1", Priority.HIGH),
        ("low-2", Priority.LOW),
        ("high-2", Priority.HIGH),
        ("normal-2", Priority.NORMAL),
    ]:
        job_enqueue(job_type="test_record", payload={"tag": tag}, priority=priority)
    worker = start_worker(tmp_path, {**env, "AUDIT_CONCURRENCY": "1"}, ["audit"], burst=True)
    assert worker.wait(60) == 0, worker.output()
    order = [t.decode() for t in redis_conn.lrange("test:order", 0, -1)]
    assert order == ["high-1", "high-2", "normal-1", "normal-2", "low-1", "low-2"]


def test_a_job_submitted_right_after_a_pause_waits_until_resume(tmp_path, env, redis_conn):
    """The pause is announced: an idle worker (in its blocking pop, its paused set read before the pause)
    puts the job back instead of starting it, on a plain queue (audit) and a fair one (chat)."""
    worker = start_worker(tmp_path, env, ["chat", "audit"])
    try:
        warm = job_enqueue(job_type="test_record", payload={"tag": "warm"})
        wait_for(lambda: _status(warm) == JobStatus.COMPLETED, timeout=30, message="worker up")
        time.sleep(0.3)  # back in its blocking pop
        queue_pause(queue="audit")
        queue_pause(queue="chat")
        plain = job_enqueue(job_type="test_record", payload={"tag": "paused"})
        fair = job_enqueue(job_type="test_async_sleep", payload={"seconds": 0, "tag": "paused-chat"})
        time.sleep(2.5)  # past the worker's own periodic re-read: long enough for a missed pause to show
        assert (_status(plain), _status(fair)) == (JobStatus.QUEUED, JobStatus.QUEUED)
        assert not _started(redis_conn, "paused-chat")
        queue_resume(queue="audit")
        queue_resume(queue="chat")
        wait_for(lambda: _status(plain) == _status(fair) == JobStatus.COMPLETED, timeout=30, message="resumed")
    finally:
        queue_resume(queue="audit")
        queue_resume(queue="chat")
        worker.stop()
    assert [t.decode() for t in redis_conn.lrange("test:order", 0, -1)] == ["warm", "paused"]


def test_the_periodic_hooks_run_in_a_process_of_their_own_on_the_same_database(tmp_path, env, redis_conn):
    """Heavy hooks (the audit chain's verification) must not hold the GIL the worker's pickups wait on,
    nor compete with them for a core: their process runs at a lower priority than the worker."""
    import os

    from django.db import connection

    hooks = {"PERIODIC_HOOKS": "tests.jobs.record_hook_process", "PERIODIC_HOOKS_INTERVAL": "1"}
    worker = start_worker(tmp_path, {**env, **hooks}, ["audit"])
    try:
        wait_for(lambda: redis_conn.llen("test:hooks") >= 2, timeout=30, message="two hook runs")
    finally:
        worker.stop()
    runs = [entry.decode().split(" ") for entry in redis_conn.lrange("test:hooks", 0, -1)]
    assert all(pid != str(worker.pid) for pid, _, _, _ in runs), (runs, worker.pid)
    assert {name for _, name, _, _ in runs} == {connection.settings_dict["NAME"]}
    # The worker runs at this test's priority (it starts it); the hooks' child, lower (a higher nice value).
    assert {int(priority) for _, _, priority, _ in runs} == {min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19)}


def _hook_starts(redis_conn) -> list[float]:
    """When each hooks child (tests.jobs.record_hook_process) was started."""
    return [float(entry.decode().split(" ")[3]) for entry in redis_conn.lrange("test:hooks", 0, -1)]


def _steady_traffic(until):
    """A job started every ~50 ms while `until()` says go on; returns (first submission, last submission)."""
    first = time.time()
    while not until():
        job_enqueue(job_type="test_record", payload={"tag": "traffic"})
        time.sleep(0.05)
    return first, time.time()


def _start_hooks_worker(tmp_path, env, redis_conn, *, defer_seconds: int):
    """An `audit` worker whose hooks (tests.jobs.record_hook_process) are due every second and wait up to
    `defer_seconds` for a quiet pass; returned once its first, idle passes have run them."""
    hooks = {
        "PERIODIC_HOOKS": "tests.jobs.record_hook_process",
        "PERIODIC_HOOKS_INTERVAL": "1",
        "PERIODIC_HOOKS_DEFER_SECONDS": str(defer_seconds),
    }
    worker = start_worker(tmp_path, {**env, **hooks}, ["audit"])
    try:
        wait_for(lambda: redis_conn.llen("test:hooks") >= 1, timeout=30, message="a hook run of the idle worker")
    except BaseException:
        worker.stop()
        raise
    return worker


def test_due_hooks_wait_while_the_worker_starts_jobs_and_run_once_it_is_quiet(tmp_path, env, redis_conn):
    """Starting the hooks' child slowed the pickups around it: due hooks wait for a pass with no job started."""
    worker = _start_hooks_worker(tmp_path, env, redis_conn, defer_seconds=120)
    try:
        deadline = time.time() + 6
        first, last = _steady_traffic(lambda: time.time() > deadline)
        wait_for(lambda: max(_hook_starts(redis_conn)) > last, timeout=30, message="the hooks once quiet again")
    finally:
        worker.stop()
    # Due every second, but none started while jobs kept starting (after the first pass that saw them).
    during = [t for t in _hook_starts(redis_conn) if first + 1.5 < t < last]
    assert during == [], (first, last, _hook_starts(redis_conn))


def test_hooks_deferred_by_steady_traffic_still_run_within_the_bound(tmp_path, env, redis_conn):
    worker = _start_hooks_worker(tmp_path, env, redis_conn, defer_seconds=2)
    try:
        started = time.time()
        give_up = started + 60
        first, last = _steady_traffic(
            lambda: time.time() > give_up or any(t > started + 1.5 for t in _hook_starts(redis_conn))
        )
    finally:
        worker.stop()
    assert any(first + 1.5 < t <= last for t in _hook_starts(redis_conn)), (first, last, _hook_starts(redis_conn))


def test_hard_timeouts_stop_inline_threaded_and_async_jobs(tmp_path, env, redis_conn):
    jobs = [
        job_enqueue(job_type=t, payload={"seconds": 30})
        for t in ("test_inline_timeout", "test_thread_timeout", "test_async_timeout")
    ]
    worker = start_worker(tmp_path, env)
    try:
        wait_for(lambda: all(_status(j) == JobStatus.FAILED for j in jobs), timeout=30, message="timeouts")
        # The process goes on serving every queue afterwards.
        after = [
            job_enqueue(job_type="test_record", payload={"tag": "after"}),
            job_enqueue(job_type="test_echo", payload={"value": "after"}),
        ]
        wait_for(lambda: all(_status(j) == JobStatus.COMPLETED for j in after), timeout=30, message="later jobs")
    finally:
        worker.stop()
    for job in jobs:
        record = _record(job)
        assert record.error_code == "JobTimeoutException", (job.job_type, record.error_message)
        assert record.result is None


def test_cancelling_an_async_job_stops_it_mid_stream(tmp_path, env, redis_conn):
    # Not cooperative: only the runtime's fence watcher can stop it.
    job = job_enqueue(job_type="test_async_sleep", payload={"seconds": 20, "tag": "cx", "cooperative": False})
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        wait_for(lambda: _started(redis_conn, "cx"), timeout=30, message="start")
        wait_for(lambda: len(output_read_all(job_id=job.pk)) > 3, timeout=10, message="some output")
        job_cancel(job=_record(job))
        wait_for(
            lambda: (
                _outcomes(job) == ["cancelled"]
                and redis_conn.hget(f"slimy:worker:slots:{_record(job).worker_name}", "chat:busy") == b"0"
            ),
            timeout=10,
            message="the slot freed",
        )
        time.sleep(0.5)  # text it buffered before the cancel may still reach the log with the flusher's round
        written = "".join(e.get("text", "") for e in output_read_all(job_id=job.pk))
        time.sleep(1)
        # The job was stopped mid-stream: 20 s of steps would be 400 of them; it wrote a few before the cancel.
        assert len(written.split()) < 100
        assert "".join(e.get("text", "") for e in output_read_all(job_id=job.pk)) == written
    finally:
        worker.stop()
    assert _status(job) == JobStatus.CANCELLED and redis_conn.llen("test:done:cx") == 0


def test_takeover_after_kill_9_completes_the_job_elsewhere(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_async_sleep", payload={"seconds": 1.5, "tag": "kill"})
    first = start_worker(tmp_path, env, ["chat"], name="first")
    second = None
    try:
        wait_for(lambda: _started(redis_conn, "kill"), timeout=30, message="start")
        second = start_worker(tmp_path, env, ["chat"], name="second")
        killed_at = time.monotonic()
        os.killpg(first.pid, signal.SIGKILL)
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=40, message="completion elsewhere")
        print(f"kill -9 → completed on the other worker in {time.monotonic() - killed_at:.1f} s")
    finally:
        first.stop()
        if second:
            second.stop()
    record = _record(job)
    assert _outcomes(job) == ["abandoned", "completed"] and record.worker_name == "second"


def test_a_short_freeze_keeps_the_jobs(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_async_sleep", payload={"seconds": 2, "tag": "nap"})
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        wait_for(lambda: _started(redis_conn, "nap"), timeout=30, message="start")
        os.kill(worker.pid, signal.SIGSTOP)
        time.sleep(1)  # shorter than WORKER_TTL
        os.kill(worker.pid, signal.SIGCONT)
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=30, message="completion")
    finally:
        worker.stop()
    assert _outcomes(job) == ["completed"]


def test_a_long_freeze_loses_the_jobs_and_the_woken_attempt_records_nothing(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_async_sleep", payload={"seconds": 3, "tag": "frozen", "cooperative": False})
    first = start_worker(tmp_path, env, ["chat"], name="frozen")
    second = None
    try:
        wait_for(lambda: _started(redis_conn, "frozen"), timeout=30, message="start")
        os.kill(first.pid, signal.SIGSTOP)
        second = start_worker(tmp_path, env, ["chat"], name="awake")
        wait_for(lambda: len(_started(redis_conn, "frozen")) == 2, timeout=40, message="attempt 2 started")
        os.kill(first.pid, signal.SIGCONT)  # attempt 1 wakes up in the middle of its work
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=40, message="completion")
        time.sleep(1.5)  # let the woken attempt try whatever it still would
    finally:
        os.kill(first.pid, signal.SIGCONT)
        first.stop()
        if second:
            second.stop()
    record = _record(job)
    assert record.attempts == 2 and record.worker_name == "awake"
    assert record.progress["attempt"] == 2
    assert [a.outcome for a in record.attempt_history.order_by("number")] == ["abandoned", "completed"]
    entries = output_read_all(job_id=job.pk)
    second_segment = next(i for i, e in enumerate(entries) if e["type"] == "segment" and e["attempt"] == 2)
    assert all(e["attempt"] == 2 for e in entries[second_segment:]), "attempt 1 wrote after it was superseded"


def test_cancel_then_retry_while_attempt_1_runs_leaves_attempt_1_cancelled(tmp_path, env, redis_conn):
    """Issue 15 item 2: attempt 1 must behave as cancelled even once attempt 2 runs."""
    job = job_enqueue(job_type="test_async_sleep", payload={"seconds": 3, "tag": "cr", "cooperative": False})
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        wait_for(lambda: _started(redis_conn, "cr"), timeout=30, message="start")
        job_cancel(job=_record(job))
        job_retry(job=_record(job))
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=40, message="attempt 2 completes")
        time.sleep(1)
    finally:
        worker.stop()
    record = _record(job)
    assert record.progress["attempt"] == record.attempts
    history = [a.outcome for a in record.attempt_history.order_by("number")]
    assert history[0] == "cancelled" and history[-1] == "completed" and "completed" not in history[:-1]
    assert redis_conn.lrange("test:done:cr", 0, -1) == [str(record.attempts).encode()]


def test_a_retry_started_before_the_fence_pass_stops_attempt_1(tmp_path, env, redis_conn):
    """Cancel and retry in one commit: attempt 2 reaches the same process before the fence's next pass
    could see attempt 1 as cancelled. Attempt 1 (a threaded job that learns of it only from the runtime)
    must still be told to stop, not left to run to its end untracked."""
    from django.db import transaction

    job = job_enqueue(job_type="test_sleep", payload={"seconds": 4, "tag": "rr"})
    worker = start_worker(tmp_path, env, ["chat"])
    try:
        wait_for(lambda: _started(redis_conn, "rr"), timeout=30, message="attempt 1 starts")
        began = time.monotonic()
        with transaction.atomic():
            job_cancel(job=_record(job))
            job_retry(job=_record(job))
        wait_for(lambda: len(_started(redis_conn, "rr")) == 2, timeout=30, message="attempt 2 starts")
        job_cancel(job=_record(job))
        wait_for(lambda: _outcomes(job) == ["cancelled", "cancelled"], timeout=10, message="attempt 2 cancelled")
        time.sleep(max(0.0, began + 5 - time.monotonic()))  # past the end attempt 1 would have reached
        assert redis_conn.llen("test:done:rr") == 0, "attempt 1 ran to its end"
    finally:
        worker.stop()
    assert not redis_conn.hgetall("slimy:fair:chat:held")  # no fair slot left behind


def test_warm_shutdown_lets_jobs_in_flight_finish(tmp_path, env, redis_conn):
    jobs = [job_enqueue(job_type="test_async_sleep", payload={"seconds": 1.5, "tag": f"w{i}"}) for i in range(3)]
    worker = start_worker(tmp_path, env, ["chat"])
    wait_for(lambda: all(_started(redis_conn, f"w{i}") for i in range(3)), timeout=30, message="start")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    assert all(_status(j) == JobStatus.COMPLETED for j in jobs)
    assert all(_outcomes(j) == ["completed"] for j in jobs)


def test_second_sigterm_hands_jobs_back_at_once_and_they_run_again(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_async_sleep", payload={"seconds": 30, "tag": "cold", "cooperative": False})
    sync_job = job_enqueue(job_type="test_db_sleep", payload={"seconds": 30, "tag": "cold-sync", "cooperative": False})
    worker = start_worker(tmp_path, env)
    wait_for(lambda: _started(redis_conn, "cold") and _started(redis_conn, "cold-sync"), timeout=30, message="start")
    worker.signal(signal.SIGTERM)
    time.sleep(0.5)
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0, worker.output()
    for j in (job, sync_job):
        record = _record(j)
        assert record.status == JobStatus.RETRYING, record.status
        assert _outcomes(j) == ["abandoned"]
    # Handed back due now, where the next worker pops (not in the scheduled registry for a back-off).
    from queues.connections import get_rq_queue
    from queues.fairness import fair_waiting_ids

    assert str(job.pk) in fair_waiting_ids(conn=redis_conn, queue="chat")
    assert str(sync_job.pk) in get_rq_queue("database").get_job_ids()


def test_every_heartbeat_writes_the_slots_hash_for_the_dashboard(tmp_path, env, redis_conn):
    job = job_enqueue(job_type="test_async_sleep", payload={"seconds": 4, "tag": "dash"})
    worker = start_worker(tmp_path, {**env, "CHAT_CONCURRENCY": "7"}, name="dash")
    try:
        wait_for(lambda: _started(redis_conn, "dash"), timeout=30, message="start")
        wait_for(
            lambda: redis_conn.hget("slimy:worker:slots:dash", "chat:busy") == b"1",
            timeout=10,
            message="a beat with the job in flight",
        )
        slots = {k.decode(): v.decode() for k, v in redis_conn.hgetall("slimy:worker:slots:dash").items()}
        assert slots["pid"] == str(worker.pid) and slots["host"]
        assert (slots["chat:slots"], slots["database:slots"], slots["audit:slots"]) == ("7", "10", "2")
        assert slots["database:busy"] == "0" and slots["audit:busy"] == "0"
        assert 0 < redis_conn.ttl("slimy:worker:slots:dash") <= 3  # the heartbeat TTL (WORKER_TTL)
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=30, message="completion")
    finally:
        worker.stop()
    assert not redis_conn.exists("slimy:worker:slots:dash")  # a stopped process leaves no stale slots


def test_an_idle_lane_replaces_a_dropped_database_session_before_the_next_job(tmp_path, env, redis_conn):
    # Without the in-process reconciler, nothing else in an idle worker touches PostgreSQL: a session that
    # appears after the old ones were dropped is the idle lane's own, opened ahead of the next job.
    from django.db import connection

    from queues.workers.runtime import SESSION_CHECK_SECONDS

    def sessions():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return {row[0] for row in cursor.fetchall()}

    first = job_enqueue(job_type="test_record", payload={"tag": "before"})
    worker = start_worker(tmp_path, {**env, "WORKER_RECONCILER": "0"}, queues=("audit",))
    try:
        wait_for(lambda: _status(first) == JobStatus.COMPLETED, timeout=30, message="the first job")
        # Past SESSION_CHECK_SECONDS, so the thread that records completions checks its session on its
        # next use too (a session used within it is trusted; its job would go to its retry policy).
        time.sleep(SESSION_CHECK_SECONDS + 0.5)
        dropped = sessions()
        assert dropped
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [list(dropped)])
        wait_for(lambda: sessions() - dropped, timeout=30, message="a new session for the idle lane")
        second = job_enqueue(job_type="test_record", payload={"tag": "after"})
        wait_for(lambda: _status(second) == JobStatus.COMPLETED, timeout=30, message="the job after")
    finally:
        worker.stop()


def test_a_lane_starting_and_finishing_a_job_does_not_send_the_loop_round_again(tmp_path, env, redis_conn):
    # While the loop's blocking pop waits on the job's queue, a new job wakes it anyway: the lane's "room
    # again" (job started, batch taken, outcome recorded) need not make it repeat its pop, a Redis round trip
    # just as the job starts. A pass after a blocking pop ends issues one LMPOP and a new BLMPOP; a pass
    # that the lane called for only an LMPOP.
    def calls(command):
        stats = redis_conn.info("commandstats").get(f"cmdstat_{command}")
        return stats["calls"] if stats else 0

    worker = start_worker(tmp_path, env, queues=("audit",))
    try:
        warm = job_enqueue(job_type="test_record", payload={"tag": "warm"})
        wait_for(lambda: _status(warm) == JobStatus.COMPLETED, timeout=30, message="the first job")
        lmpop, blmpop = calls("lmpop"), calls("blmpop")
        for i in range(10):
            job = job_enqueue(job_type="test_record", payload={"tag": f"one{i}"})
            wait_for(lambda job=job: _status(job) == JobStatus.COMPLETED, timeout=30, message=f"job {i}")
        extra_passes = (calls("lmpop") - lmpop) - (calls("blmpop") - blmpop)
    finally:
        worker.stop()
    assert extra_passes < 10, extra_passes
