"""Scenario 8: PostgreSQL stopped while database jobs run, on a PRIVATE cluster (the shared server stays up)."""

import json
import time

import pytest

from tests.faults.harness import Api, Fleet, Ledger, PrivatePostgres, effect_tables, http_get, manage, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

ENQUEUE = """
import json
from queues.services import job_enqueue
ids = [str(job_enqueue(job_type="test_effect", payload={{"seconds": {seconds}, "idempotent": True}}).pk)
       for _ in range({count})]
print(json.dumps(ids))
"""

API_USER = """
from tests.faults.harness import api_user
print(" ".join(api_user(role="club")))
"""


@pytest.fixture
def private_pg():
    pg = PrivatePostgres().init()
    pg.start()
    pg.create_database("slimy")
    yield pg
    pg.destroy()


def _submit(env, count, seconds):
    out = manage(env, "shell", "--no-imports", "-c", ENQUEUE.format(count=count, seconds=seconds))
    return json.loads(out.strip().splitlines()[-1])


def _ready(fleet):
    return http_get(fleet.url + "/health/ready", timeout=15)


def test_scenario_8_postgres_stopped(tmp_path, private_pg, fault_env, fault_mode, record_figures):
    env = fault_env(DATABASE_URL=private_pg.url("slimy"))
    manage(env, "migrate", "--noinput")
    effect_tables(private_pg.dsn("slimy"))
    ledger = Ledger(private_pg.dsn("slimy"))
    outage = fault_mode.pick(8, 30)
    token, conversation = manage(env, "shell", "--no-imports", "-c", API_USER).split()[-2:]
    fleet = Fleet(tmp_path, env, workers=2, web=True).start()
    api = Api(fleet.url, token)
    try:
        wait_until(lambda: _ready(fleet)[0] == 200, 60, "the web server")
        ids = _submit(env, fault_mode.pick(40, 150), 0.2)
        wait_until(lambda: sum(s == "completed" for s in ledger.statuses(ids).values()) >= 3, 60, "work to flow")
        private_pg.stop("fast")
        stopped_at = time.monotonic()
        began = time.monotonic()
        status, body = _ready(fleet)
        probe = time.monotonic() - began
        assert status == 503 and body["checks"]["database"] == "unavailable", (status, body)
        assert body["error"] == "not_ready" and "database" in body["message"]
        # A submission cannot be written to the ledger: a clear 503, not a 500.
        http_status, http_body, http_took = api.post(
            "/api/chat/messages", {"conversationId": conversation, "content": "while PostgreSQL is down"}, timeout=30
        )
        assert http_status == 503 and http_body["error"] == "database_unavailable", (http_status, http_body)
        time.sleep(max(outage - (time.monotonic() - stopped_at), 0))
        private_pg.start()
        up_at = time.monotonic()
        wait_until(lambda: _ready(fleet)[0] == 200, 30, "readiness after the restart")
        ready_again = time.monotonic() - up_at
        ledger.wait_final(ids, timeout=fault_mode.pick(150, 300))
        recovery = time.monotonic() - up_at
    finally:
        fleet.stop()
    rep = ledger.report(ids)
    assert not rep.problems(), (rep, fleet.logs())
    record_figures(
        "8 PostgreSQL stopped (private cluster)",
        rep,
        recovery=recovery,
        notes=f"down {outage} s; /health/ready said 503 database in {probe:.1f} s and 200 again "
        f"{ready_again:.1f} s after the restart; POST /api/chat/messages 503 database_unavailable "
        f"in {http_took:.1f} s; "
        f"{rep.reexecuted} job(s) re-ran (idempotent "
        f"writes, no duplicate row); {fleet.restarts('worker')} worker restart(s); s from the "
        "restart to every job final",
    )
