"""Scenarios 1-4: worker processes die, crash or are restarted while jobs run."""

import os
import signal
import time

import psycopg
import pytest

from queues.services import job_enqueue
from tests.faults.harness import Fleet, process_alive, wait_until
from tests.processes import FORKING

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _submit(n, **payload):
    return [str(job_enqueue(job_type="test_effect", payload=payload).pk) for _ in range(n)]


def _running(ledger, exclude=()):
    """(job_id, pid) of an attempt running right now in some process, or None."""
    with psycopg.connect(ledger.dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT r.job_id::text, r.pid FROM test_fault_run r JOIN queues_jobrecord j ON j.id = r.job_id "
            "WHERE j.status = 'started' AND j.attempts = r.attempt ORDER BY r.at"
        ).fetchall()
    for job_id, pid in rows:
        if job_id not in exclude and process_alive(pid):
            return job_id, pid
    return None


def _outcomes(ledger, job_id):
    with psycopg.connect(ledger.dsn, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT outcome FROM queues_jobattempt WHERE job_id = %s ORDER BY number", [job_id]
            ).fetchall()
        ]


def test_scenario_1_killed_work_horse(tmp_path, fault_env, fault_mode, ledger, record_figures):
    # Work-horses exist only in the forking worker (the one for jobs that need a process of their own).
    fleet = Fleet(tmp_path, fault_env(), workers=2, worker_class=FORKING).start()
    try:
        ids = _submit(fault_mode.pick(4, 16), seconds=1.0)
        killed, recoveries = [], []
        for _ in range(fault_mode.pick(2, 6)):
            ids += _submit(2, seconds=1.5)  # keep work in flight for the next kill
            job_id, pid = wait_until(lambda: _running(ledger, exclude=killed), 60, "a job running in a work-horse")
            assert pid not in [w.proc.pid for w in fleet.workers() if w.proc]  # the horse, not the worker
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            killed.append(job_id)
            wait_until(
                lambda job_id=job_id: ledger.statuses([job_id])[job_id] == "completed", 60, "the killed job to complete"
            )
            recoveries.append(time.monotonic() - killed_at)
        ledger.wait_final(ids, timeout=120)
    finally:
        fleet.stop()
    rep = ledger.report(ids)
    assert not rep.problems(), (rep, fleet.logs("worker"))
    for job_id in killed:
        assert _outcomes(ledger, job_id)[:2] == ["abandoned", "completed"]
    assert fleet.restarts("worker") == 0  # a dead horse does not take its worker down
    record_figures(
        "1 kill -9 work-horse",
        rep,
        recovery=max(recoveries),
        notes=f"{len(killed)} horses killed mid-job; max s from kill to completed (retry backoff 1 s)",
    )


def test_scenario_2_killed_worker_taken_over(tmp_path, fault_env, fault_mode, ledger, record_figures):
    # The worker runtime at its production defaults (WORKER_TTL 3 s, reconciler every 1 s in each worker);
    # full mode also uses the production grace for lost jobs.
    env = fault_env(WORKER_TTL=3) if not fault_mode.full else fault_env(WORKER_TTL=3, RECONCILE_GRACE_SECONDS=30)
    fleet = Fleet(tmp_path, env, workers=2, reconcile_interval=1).start()
    try:
        ids = _submit(fault_mode.pick(6, 20), seconds=fault_mode.pick(1.0, 2.0))
        job_id, pid = wait_until(lambda: _running(ledger), 60, "a job running")
        # The runtime runs the job in its own process (a forking worker would run it in a child).
        victim = next(
            w for w in fleet.workers() if w.proc and pid in [w.proc.pid, *(c.pid for c in _children(w.proc.pid))]
        )
        os.killpg(victim.proc.pid, signal.SIGKILL)  # the worker and everything it runs
        killed_at = time.monotonic()
        wait_until(
            lambda: ledger.statuses([job_id])[job_id] == "completed",
            fault_mode.pick(60, 120),
            "the orphaned job to be taken over",
        )
        recovery = time.monotonic() - killed_at
        ledger.wait_final(ids, timeout=120)
    finally:
        fleet.stop()
    rep = ledger.report(ids)
    assert not rep.problems(), (rep, fleet.logs())
    assert _outcomes(ledger, job_id)[:2] == ["abandoned", "completed"]
    ttl = env["WORKER_TTL"]
    record_figures(
        "2 kill -9 whole worker",
        rep,
        recovery=recovery,
        notes=f"runtime, WORKER_TTL {ttl} s, reconciler every 1 s; s from kill to the "
        "orphan completed by another worker",
    )


def _children(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_scenario_3_poison_job(tmp_path, fault_env, fault_mode, ledger, record_figures):
    # A job that kills its process belongs on the forking worker: there it kills a work-horse only.
    fleet = Fleet(tmp_path, fault_env(), workers=2, worker_class=FORKING).start()
    started = time.monotonic()
    try:
        poison = [
            str(job_enqueue(job_type="test_crash", payload={"tag": f"p{i}"}).pk) for i in range(fault_mode.pick(2, 5))
        ]
        ids = _submit(fault_mode.pick(10, 60), seconds=0.1)
        ledger.wait_final(poison + ids, timeout=120)
        elapsed = time.monotonic() - started
    finally:
        fleet.stop()
    rep = ledger.report(ids)
    assert not rep.problems(), (rep, fleet.logs("worker"))
    bad = ledger.report(poison, effect=False)
    assert bad.failed == len(poison) and bad.max_attempts_seen == 2  # test_crash allows 2 attempts
    assert not bad.over_attempts and not bad.bad_history
    assert fleet.restarts("worker") == 0
    combined = ledger.report(poison + ids, effect=False)
    combined.duplicated, combined.lost = rep.duplicated, rep.lost + bad.lost
    record_figures(
        "3 poison job (crashes its process)",
        combined,
        recovery=elapsed,
        notes=f"{len(poison)} poison jobs failed after 2 attempts each; s for everything to finish",
    )


def _registered(env, pid) -> bool:
    """The worker has booted (RQ registered it, so its signal handlers are installed)."""
    import redis
    from rq import Worker

    return any(w.pid == pid for w in Worker.all(connection=redis.Redis.from_url(env["REDIS_URL"])))


def test_scenario_4_rolling_sigterm(tmp_path, fault_env, fault_mode, ledger, record_figures):
    env = fault_env()
    fleet = Fleet(tmp_path, env, workers=3).start()
    try:
        ids = _submit(fault_mode.pick(60, 240), seconds=0.3)
        wait_until(lambda: _running(ledger), 60, "work to start")
        for _ in range(fault_mode.pick(1, 3)):
            for worker in fleet.workers():
                proc = worker.proc
                wait_until(
                    lambda worker=worker, proc=proc: (
                        worker.proc is not None and worker.proc is not proc or proc is not None
                    ),
                    30,
                    "the worker to be running",
                )
                proc = worker.proc
                # A deploy stops booted workers; one still importing Django would die of the default action.
                wait_until(lambda proc=proc: _registered(env, proc.pid), 60, "the worker to register")
                proc.send_signal(signal.SIGTERM)  # warm shutdown: the job in flight finishes
                proc.wait(60)
                assert proc.returncode == 0
                # the supervisor starts a fresh one (as a deploy would); wait before the next
                wait_until(
                    lambda worker=worker, proc=proc: worker.proc is not None and worker.proc is not proc,
                    30,
                    "the restart",
                )
        last = time.monotonic()
        ledger.wait_final(ids, timeout=180)
        drained = time.monotonic() - last
    finally:
        fleet.stop()
    rep = ledger.report(ids)
    assert not rep.problems(), (rep, fleet.logs("worker"))
    assert rep.reexecuted == 0  # a warm shutdown finishes the job in flight, nothing runs twice
    record_figures(
        "4 SIGTERM rolling restart",
        rep,
        recovery=drained,
        notes=f"{fleet.restarts('worker')} worker restarts; s to drain after the last restart",
    )
