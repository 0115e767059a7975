"""Scenarios 5-7: Redis restarted, flushed or paused while jobs flow."""

import os
import signal
import threading
import time

import pytest
from django.db import connection

from queues.services import job_enqueue
from tests.faults.harness import Api, Fleet, api_user, http_get, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _submit(n, **payload):
    return [str(job_enqueue(job_type="test_effect", payload=payload).pk) for _ in range(n)]


class Submitter(threading.Thread):
    """Submits a job every `interval` s until stopped (bounded by `limit`); remembers every accepted id."""

    def __init__(self, *, interval=0.1, limit=2000, seconds=0.2):
        super().__init__(name="submitter", daemon=True)
        self.interval, self.limit, self.seconds = interval, limit, seconds
        self.ids: list[str] = []
        self.latencies: list[tuple[float, float]] = []  # (when, seconds the submission took)
        self.stopped = threading.Event()

    def run(self):
        try:
            while not self.stopped.is_set() and len(self.ids) < self.limit:
                began = time.monotonic()
                self.ids.append(str(job_enqueue(job_type="test_effect", payload={"seconds": self.seconds}).pk))
                self.latencies.append((began, time.monotonic() - began))
                self.stopped.wait(self.interval)
        finally:
            connection.close()

    def stop(self):
        self.stopped.set()
        self.join(30)


def _ready_failing(fleet):
    status, body = http_get(fleet.url + "/health/ready")
    return (status, body) if status == 503 else None


class HttpSubmitter(threading.Thread):
    """Posts a chat message every `interval` s (bounded by `limit`); keeps every answer."""

    def __init__(self, api, conversation_id, *, interval=0.05, limit=3000):
        super().__init__(name="http-submitter", daemon=True)
        self.api, self.conversation_id, self.interval, self.limit = api, conversation_id, interval, limit
        self.answers: list[tuple[float, int | None, str | None, float, str | None]] = []
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set() and len(self.answers) < self.limit:
            began = time.monotonic()
            status, body, took = self.api.post(
                "/api/chat/messages",
                {"conversationId": self.conversation_id, "content": f"message {len(self.answers)}"},
                timeout=15,
            )
            body = body or {}
            self.answers.append((began, status, body.get("error"), took, body.get("jobId") if status == 202 else None))
            self.stopped.wait(self.interval)

    def accepted(self) -> list[str]:
        return [a[4] for a in self.answers if a[4]]

    def stop(self):
        self.stopped.set()
        self.join(30)


def test_scenario_5_redis_restarted_with_aof(tmp_path, fault_redis, fault_env, fault_mode, ledger, record_figures):
    token, conversation = api_user(role="club")  # raised club limits (conftest): the rate limit stays out of the way
    fleet = Fleet(tmp_path, fault_env(), workers=2, web=True).start()
    downtime = fault_mode.pick(4, 15)
    submitter = HttpSubmitter(Api(fleet.url, token), conversation)
    try:
        wait_until(lambda: http_get(fleet.url + "/health/ready")[0] == 200, 60, "the web server")
        submitter.start()
        time.sleep(fault_mode.pick(3, 10))
        # kill -9: whatever AOF (fsync every second) had not written yet is lost with it.
        os.kill(fault_redis.proc.pid, signal.SIGKILL)
        fault_redis.proc.wait(10)
        down_at = time.monotonic()
        status, body = wait_until(lambda: _ready_failing(fleet), 15, "readiness to report Redis")
        assert body["checks"]["redis"] == "unavailable"
        time.sleep(max(downtime - (time.monotonic() - down_at), 0))
        fault_redis.start()
        up_at = time.monotonic()
        time.sleep(fault_mode.pick(3, 10))  # load continues after the restart
        submitter.stop()
        ids = submitter.accepted()
        ledger.wait_final(ids, timeout=fault_mode.pick(120, 240))
        recovery = time.monotonic() - up_at
        assert http_get(fleet.url + "/health/ready")[0] == 200
    finally:
        submitter.stop()
        fleet.stop()
    # While Redis was down, submissions were refused with 503 queues_unavailable (never a 500 or a hang).
    during = [a for a in submitter.answers if down_at + 0.5 < a[0] < up_at - 0.5]
    assert during and all(a[1] == 503 and a[2] == "queues_unavailable" for a in during), during[:5]
    assert all(a[1] in (202, 503) for a in submitter.answers), {a[1] for a in submitter.answers}
    after = [a for a in submitter.answers if a[0] > up_at + 1]
    assert after and all(a[1] == 202 for a in after)  # the web recovered by itself
    rep = ledger.report(ids, effect="message")
    assert not rep.problems(), (rep, fleet.logs())
    restarts = fleet.restarts("worker")
    refused = sum(a[1] == 503 for a in submitter.answers)
    slowest = max(a[3] for a in during)
    record_figures(
        "5 Redis kill -9 + restart (AOF everysec)",
        rep,
        recovery=recovery,
        notes=f"HTTP message submissions; Redis down {downtime} s: {refused} refused with 503 "
        f"queues_unavailable (slowest answer {slowest:.2f} s); {restarts} worker restart(s) by "
        "the supervisor; s from Redis back to every accepted message written once",
    )


def test_scenario_6_redis_flushall(tmp_path, fault_redis, fault_env, fault_mode, ledger, record_figures):
    grace = fault_mode.pick(5, 30)
    # Liveness keys vanish with the flush; the workers beat again within WORKER_TTL/3 (10 s here), and
    # a reconciler pass in between must not take their running jobs away from them.
    fleet = Fleet(
        tmp_path,
        fault_env(RECONCILE_GRACE_SECONDS=grace, WORKER_TTL=30),
        workers=2,
        reconcile_interval=fault_mode.pick(1, 15),
    ).start()
    try:
        ids = _submit(2, seconds=fault_mode.pick(12, 25))  # one long job per worker, running at the flush
        ids += _submit(fault_mode.pick(30, 120), seconds=0.5)
        ids += _submit(fault_mode.pick(5, 20), seconds=0.2)
        wait_until(
            lambda: sum(s == "started" for s in ledger.statuses(ids[:2]).values()) == 2, 60, "the long jobs to start"
        )
        wait_until(lambda: sum(s == "completed" for s in ledger.statuses(ids).values()) >= 2, 60, "work to flow")
        fault_redis_client = __import__("redis").Redis.from_url(fault_redis.url)
        fault_redis_client.flushall()  # the operator's mistake: queues, registries, liveness keys, all gone
        flushed_at = time.monotonic()
        ledger.wait_final(ids, timeout=fault_mode.pick(120, 300))
        recovery = time.monotonic() - flushed_at
    finally:
        fleet.stop()
    rep = ledger.report(ids)
    assert not rep.problems(), (rep, fleet.logs())
    record_figures(
        "6 Redis FLUSHALL",
        rep,
        recovery=recovery,
        notes=f"RECONCILE_GRACE_SECONDS {grace}; s from the flush to every job final",
    )


def test_scenario_7_redis_paused(tmp_path, fault_redis, fault_env, fault_mode, ledger, record_figures):
    pause_for = fault_mode.pick(8, 60)
    token, conversation = api_user(role="club")
    api = Api("", token)
    # three workers: two hold a job that outlives the pause, the third keeps short jobs flowing
    fleet = Fleet(tmp_path, fault_env(), workers=3, web=True).start()
    api.base_url = fleet.url
    try:
        wait_until(lambda: http_get(fleet.url + "/health/ready")[0] == 200, 60, "the web server")
        # two jobs outlive the pause; liveness keys expire meanwhile (WORKER_TTL 3 s here)
        ids = _submit(2, seconds=pause_for + 4)
        ids += _submit(fault_mode.pick(30, 120), seconds=0.3)
        wait_until(lambda: sum(s == "completed" for s in ledger.statuses(ids).values()) >= 2, 60, "work to flow")
        os.kill(fault_redis.proc.pid, signal.SIGSTOP)
        paused_at = time.monotonic()
        try:
            began = time.monotonic()
            status, body = http_get(fleet.url + "/health/ready", timeout=30)
            probe = time.monotonic() - began
            assert status == 503 and body["checks"]["redis"] == "unavailable"
            # the API refuses submissions at once rather than hanging on Redis
            http_status, http_body, http_took = api.post(
                "/api/chat/messages", {"conversationId": conversation, "content": "while Redis hangs"}, timeout=30
            )
            assert http_status == 503 and http_body["error"] == "queues_unavailable", (http_status, http_body)
            # jobs accepted while Redis hangs: the record is written, the push times out, the reconciler pushes
            began = time.monotonic()
            ids += _submit(1, seconds=0.1)
            submit_took = time.monotonic() - began
            time.sleep(max(pause_for - (time.monotonic() - paused_at), 0))
        finally:
            os.kill(fault_redis.proc.pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        ledger.wait_final(ids, timeout=fault_mode.pick(120, 240))
        recovery = time.monotonic() - resumed_at
        assert http_get(fleet.url + "/health/ready")[0] == 200
    finally:
        fleet.stop()
    rep = ledger.report(ids)
    assert not rep.problems(), (rep, fleet.logs())
    record_figures(
        "7 Redis SIGSTOP",
        rep,
        recovery=recovery,
        notes=f"paused {pause_for} s; during the pause readiness answered 503 in {probe:.1f} s, "
        f"POST /api/chat/messages 503 queues_unavailable in {http_took:.1f} s, and job_enqueue "
        f"(no API guard) took {submit_took:.1f} s (socket timeout), its job pushed later; "
        f"{fleet.restarts('worker')} worker restart(s); s from resume to every job final",
    )
