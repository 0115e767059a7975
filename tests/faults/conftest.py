"""Fault scenarios: CI mode by default (short outages, small loads), full length with `--run-faults`.

`make faults` (= `pytest -m faults tests/faults --run-faults`) also writes the table of figures to
bench/results/faults.md; in CI mode the table is printed at the end of the run.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import pytest
from django.conf import settings

from tests.faults.harness import Ledger, effect_tables
from tests.processes import ROOT, database_url, process_env
from tests.redis_server import RedisServer

REPORT_PATH = ROOT / "bench" / "results" / "faults.md"
_rows: list[dict] = []


def pytest_addoption(parser):
    parser.addoption(
        "--run-faults",
        action="store_true",
        default=False,
        help="run the fault scenarios at full length and write bench/results/faults.md",
    )


@dataclass(frozen=True)
class FaultMode:
    full: bool

    def pick(self, ci, full):
        return full if self.full else ci

    @property
    def name(self) -> str:
        return "full" if self.full else "ci"


@pytest.fixture(scope="session")
def fault_mode(pytestconfig) -> FaultMode:
    full = bool(pytestconfig.getoption("--run-faults", default=False)) or os.environ.get("FAULTS_FULL") == "1"
    return FaultMode(full=full)


@pytest.fixture
def record_figures(fault_mode):
    """Add one row to the report: record_figures(scenario, ledger_report, recovery=..., notes=...)."""

    def record(scenario: str, rep, *, recovery: float | None, notes: str = "") -> None:
        _rows.append(
            dict(
                scenario=scenario,
                mode=fault_mode.name,
                accepted=rep.accepted,
                completed=rep.completed,
                failed=rep.failed,
                duplicated=rep.duplicated,
                lost=rep.lost,
                recovery="" if recovery is None else f"{recovery:.1f}",
                notes=notes,
            )
        )

    return record


HEADER = [
    "| scenario | mode | jobs accepted | completed | failed | duplicated | lost | recovery s | notes |",
    "|---|---|---|---|---|---|---|---|---|",
]


def _line(row: dict) -> str:
    return (
        "| {scenario} | {mode} | {accepted} | {completed} | {failed} | {duplicated} | {lost} | {recovery} | {notes} |"
    ).format(**row)


def _order(scenario: str) -> int:
    head = scenario.split(" ", 1)[0]
    return int(head) if head.isdigit() else 99


def _table(previous: str = "") -> str:
    """This run's rows; scenarios not run this time keep their row from `previous` (a -k run updates one)."""
    lines = {row["scenario"]: _line(row) for row in _rows}
    for old in previous.splitlines():
        cells = [c.strip() for c in old.strip().strip("|").split("|")]
        if old.startswith("| ") and cells[0] not in ("scenario",) and not cells[0].startswith("---"):
            lines.setdefault(cells[0], old)
    return "\n".join(HEADER + [lines[k] for k in sorted(lines, key=lambda s: (_order(s), s))])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _rows:
        return
    terminalreporter.write_sep("=", "fault scenarios")
    terminalreporter.write_line(_table())
    if config.getoption("--run-faults", default=False):
        REPORT_PATH.parent.mkdir(parents=True, exist_ok=True)
        previous = REPORT_PATH.read_text() if REPORT_PATH.is_file() else ""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        REPORT_PATH.write_text(
            "# Fault scenarios\n\n"
            f"`make faults` on {stamp} ({os.cpu_count()} cores), real processes: gunicorn (gthread), "
            "`manage.py rqworker` (the worker runtime; the forking SlimyWorker for scenarios 1 and 3) under the "
            "`make run` supervisor, the reconciler, "
            "a private redis-server (append-only, everysec) and PostgreSQL.\n\n"
            "*duplicated*: jobs whose side-effect row was written more than once; *lost*: jobs that got "
            "accepted but never reached a final state, or completed without their side effect; "
            "*recovery*: seconds from the end of the fault (or the kill) to the figure named in the notes.\n\n"
            + _table(previous)
            + "\n"
        )
        terminalreporter.write_line(f"written to {REPORT_PATH}")


# --- Per-scenario infrastructure.


@pytest.fixture
def fault_redis():
    """A private append-only Redis for one scenario (it gets killed, paused, flushed); settings point at it."""
    from queues.connections import reset_connections
    from queues.constants import rq_queue_names

    server = RedisServer(appendonly=True).start()
    saved = settings.REDIS_URL, settings.RQ_QUEUES
    settings.REDIS_URL = server.url
    settings.RQ_QUEUES = {
        name: {"URL": server.url, "DEFAULT_TIMEOUT": 600, "SOCKET_TIMEOUT": 5} for name in rq_queue_names()
    }
    reset_connections()
    yield server
    if server.proc and server.proc.poll() is None:
        os.kill(server.proc.pid, 18)  # SIGCONT, in case a scenario failed while Redis was paused
    server.stop()
    settings.REDIS_URL, settings.RQ_QUEUES = saved
    reset_connections()


@pytest.fixture
def fault_env(fault_redis):
    def make(**extra):
        extra.setdefault("WORKER_TTL", 3)
        extra.setdefault("RECONCILE_GRACE_SECONDS", 5)
        extra.setdefault("LOG_FORMAT", "text")
        # Machine clients of the scenarios post chat messages as a club account (chat endpoints take
        # members and clubs), with a service's limits so the rate limit stays out of the way.
        extra.setdefault(
            "API_RATE_LIMITS",
            "submit=120/min,read=1200/min,write=300/min,submit@service=6000/min,"
            "write@service=6000/min,submit@club=6000/min,write@club=6000/min",
        )
        return process_env(fault_redis.url, **extra)

    return make


@pytest.fixture
def ledger() -> Ledger:
    url = database_url()
    effect_tables(url)
    return Ledger(url)
