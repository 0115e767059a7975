"""The fault suite's machinery: a supervised fleet of real processes, a private PostgreSQL, the ledger check.

Everything runs on loopback; every wait is bounded in time. The ledger is read with plain SQL so the
same checks work on the test database and on the private PostgreSQL cluster of scenario 8.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg

from slimy_site.runall import Child, Supervisor
from tests.processes import ROOT
from tests.processes import wait_for as wait_until  # noqa: F401  (the scenarios import it from here)
from tests.redis_server import free_port

FINAL = ("completed", "failed", "cancelled")

EFFECT_DDL = """
CREATE TABLE IF NOT EXISTS test_fault_run (
    id bigserial PRIMARY KEY, job_id uuid NOT NULL, attempt int NOT NULL, pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS test_fault_effect (
    id bigserial PRIMARY KEY, job_id uuid NOT NULL, attempt int NOT NULL, pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT now());
TRUNCATE test_fault_run, test_fault_effect;
"""


def effect_tables(dsn: str) -> None:
    """(Re)create the tables test_effect jobs write to, empty."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(EFFECT_DDL)


def http_get(url: str, timeout: float = 10.0) -> tuple[int | None, dict | None]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"null")
        except ValueError:
            return err.code, None
    except (OSError, ValueError):
        return None, None


# --- The fleet: workers, reconciler, web under the `make run` supervisor.


class LoggingSupervisor(Supervisor):
    """runall's Supervisor, with each child's output in its own file (one per start)."""

    def __init__(self, children, env, log_dir: Path, **kwargs):
        self.events: list[tuple[float, str]] = []
        super().__init__(children, env, log=lambda msg: self.events.append((time.monotonic(), msg)), **kwargs)
        self.log_dir = log_dir
        self.starts: dict[str, int] = {}

    def _spawn(self, child: Child) -> None:
        n = self.starts[child.name] = self.starts.get(child.name, 0) + 1
        out = open(self.log_dir / f"{child.name}.{n}.log", "wb")
        child.proc = subprocess.Popen(
            child.argv, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        self.log(f"started {child.name} (pid {child.proc.pid})")


class Fleet:
    """`workers` rqworker processes (+ reconciler, + web) supervised and restarted when they exit."""

    def __init__(
        self,
        tmp_path: Path,
        env: dict,
        *,
        workers: int = 2,
        reconcile_interval: int = 1,
        web: bool = False,
        worker_class: str | None = None,
    ):
        self.log_dir = tmp_path / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.env = env
        self.web_port = free_port() if web else None
        py = sys.executable
        children = []
        for i in range(workers):
            argv = [py, "manage.py", "rqworker", "chat", "database", "audit", "--with-scheduler"]
            if worker_class:
                argv += ["--worker-class", worker_class]
            children.append(Child(f"worker-{i + 1}", argv))
        children.append(
            Child("reconciler", [py, "manage.py", "queues_reconcile", "--loop", "--interval", str(reconcile_interval)])
        )
        if web:
            children.append(
                Child(
                    "web",
                    [
                        py,
                        "-m",
                        "gunicorn",
                        "slimy_site.wsgi",
                        "-k",
                        "gthread",
                        "--workers",
                        "2",
                        "--threads",
                        "4",
                        "--bind",
                        f"127.0.0.1:{self.web_port}",
                        "--graceful-timeout",
                        "10",
                        "--timeout",
                        "60",
                    ],
                )
            )
        self.supervisor = LoggingSupervisor(children, env, self.log_dir, stop_timeout=40)
        self._thread = threading.Thread(target=self.supervisor.run, name="fleet", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> Fleet:
        self._thread.start()
        return self

    def child(self, name: str) -> Child:
        return next(c for c in self.supervisor.children if c.name == name)

    def workers(self) -> list[Child]:
        return [c for c in self.supervisor.children if c.name.startswith("worker-")]

    def restarts(self, prefix: str = "") -> int:
        return sum(max(n - 1, 0) for name, n in self.supervisor.starts.items() if name.startswith(prefix))

    def stop(self) -> None:
        self.supervisor.request_stop()
        self._thread.join(60)

    def logs(self, name_prefix: str = "") -> str:
        parts = []
        for path in sorted(self.log_dir.glob(f"{name_prefix}*.log")):
            parts.append(f"=== {path.name}\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)


def process_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- The ledger: what the database says about a set of jobs.


@dataclass
class LedgerReport:
    accepted: int
    completed: int = 0
    failed: int = 0
    waiting: int = 0
    started: int = 0
    missing: int = 0
    duplicated: int = 0  # jobs whose effect row exists more than once
    lost: int = 0  # jobs never final, or completed without their effect
    reexecuted: int = 0  # jobs whose body ran more than once (at-least-once at work)
    over_attempts: list[str] = field(default_factory=list)
    bad_history: list[str] = field(default_factory=list)
    max_attempts_seen: int = 0

    def problems(self, *, expect_failed: int = 0) -> list[str]:
        found = []
        if self.duplicated:
            found.append(f"{self.duplicated} job(s) wrote their side effect more than once")
        if self.lost:
            found.append(f"{self.lost} job(s) lost (not final, missing, or completed without effect)")
        if self.failed != expect_failed:
            found.append(f"{self.failed} job(s) failed, expected {expect_failed}")
        if self.over_attempts:
            found.append(f"attempts above the policy: {self.over_attempts[:5]}")
        if self.bad_history:
            found.append(f"attempt history disagrees with the record: {self.bad_history[:5]}")
        return found


class Ledger:
    def __init__(self, dsn: str):
        self.dsn = dsn

    def _rows(self, sql: str, params) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(sql, params).fetchall()

    def statuses(self, ids: list[str]) -> dict[str, str]:
        rows = self._rows("SELECT id::text, status FROM queues_jobrecord WHERE id = ANY(%s::uuid[])", [ids])
        return dict(rows)

    def all_final(self, ids: list[str]) -> bool:
        statuses = self.statuses(ids)
        return len(statuses) == len(ids) and all(s in FINAL for s in statuses.values())

    def wait_final(self, ids: list[str], timeout: float) -> float:
        """Seconds until every job is final (raises with the stragglers' states on timeout)."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            try:
                if self.all_final(ids):
                    return time.monotonic() - started
            except psycopg.OperationalError:
                pass  # the database is part of the experiment
            time.sleep(0.25)
        statuses = self.statuses(ids)
        stuck = {i: s for i, s in statuses.items() if s not in FINAL}
        raise AssertionError(
            f"{len(stuck)} of {len(ids)} job(s) not final after {timeout:.0f} s: "
            f"{list(stuck.items())[:5]}; missing {len(set(ids) - set(statuses))}"
        )

    EFFECTS = {
        # kind: (rows written per job, body runs per job)
        "test": (
            "SELECT job_id::text, count(*) FROM test_fault_effect WHERE job_id = ANY(%s::uuid[]) GROUP BY 1",
            "SELECT job_id::text, count(DISTINCT attempt) FROM test_fault_run WHERE job_id = ANY(%s::uuid[]) "
            "GROUP BY 1",
        ),
        # conversations: one message row per save_message job, keyed by its job id
        "message": (
            "SELECT job_id::text, count(*) FROM chat_message WHERE job_id = ANY(%s::uuid[]) GROUP BY 1",
            "SELECT job_id::text, count(*) FROM queues_jobattempt WHERE job_id = ANY(%s::uuid[]) GROUP BY 1",
        ),
    }

    def report(self, ids: list[str], *, effect: bool | str = True) -> LedgerReport:
        kind = "test" if effect is True else effect
        rep = LedgerReport(accepted=len(ids))
        records = self._rows(
            "SELECT id::text, status, attempts, max_attempts FROM queues_jobrecord WHERE id = ANY(%s::uuid[])", [ids]
        )
        history = dict(
            (
                (i, (n, r, m))
                for i, n, r, m in self._rows(
                    "SELECT job_id::text, count(*), count(*) FILTER (WHERE outcome = 'running'), max(number) "
                    "FROM queues_jobattempt WHERE job_id = ANY(%s::uuid[]) GROUP BY job_id",
                    [ids],
                )
            )
        )
        effects = dict(self._rows(self.EFFECTS[kind][0], [ids])) if kind else {}
        runs = dict(self._rows(self.EFFECTS[kind][1], [ids])) if kind else {}
        rep.missing = len(ids) - len(records)
        rep.lost = rep.missing
        for job_id, status, attempts, max_attempts in records:
            rep.max_attempts_seen = max(rep.max_attempts_seen, attempts)
            if status == "completed":
                rep.completed += 1
                if effect and effects.get(job_id, 0) == 0:
                    rep.lost += 1
            elif status == "failed":
                rep.failed += 1
            elif status == "started":
                rep.started += 1
                rep.lost += 1
            else:
                rep.waiting += 1
                rep.lost += 1
            if effects.get(job_id, 0) > 1:
                rep.duplicated += 1
            if runs.get(job_id, 0) > 1:
                rep.reexecuted += 1
            if attempts > max_attempts:
                rep.over_attempts.append(f"{job_id}: {attempts}/{max_attempts}")
            count, running, highest = history.get(job_id, (0, 0, 0))
            if count != attempts or (highest or 0) != attempts or (status in FINAL and running):
                rep.bad_history.append(f"{job_id}: {status}, attempts {attempts}, history {count}/{running} running")
        return rep


# --- HTTP clients of the API.


class Api:
    def __init__(self, base_url: str, token: str):
        self.base_url, self.token = base_url, token

    def post(self, path: str, body: dict, timeout: float = 30.0) -> tuple[int | None, dict | None, float]:
        """(status, body, seconds); status None when the connection failed."""
        request = urllib.request.Request(
            self.base_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Token {self.token}"},
        )
        began = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null"), time.monotonic() - began
        except urllib.error.HTTPError as err:
            try:
                payload = json.loads(err.read() or b"null")
            except ValueError:
                payload = None
            return err.code, payload, time.monotonic() - began
        except (OSError, ValueError):
            return None, None, time.monotonic() - began


def api_user(*, role: str | None = "member", username: str = "faults"):
    """A user with an API token and one conversation: (token key, conversation id)."""
    from chat.services import conversation_create
    from slimy_site.services import api_token_issue
    from tests.factories.api import UserFactory

    user = UserFactory(username=username, role=role)
    conversation = conversation_create(owner_id=user.pk, title="faults", job_id=None)
    return api_token_issue(user=user), str(conversation.pk)


# --- A private PostgreSQL cluster (scenario 8 stops it; the machine's shared server is never touched).


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")


class PrivatePostgres:
    """initdb into a temporary directory, trust auth on 127.0.0.1, a free port; run as `postgres` under root."""

    def __init__(self):
        self.bin = _pg_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="slimy-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "postgres.log"
        self._as = []
        if os.geteuid() == 0:
            # initdb refuses to run as root: hand the directory to the postgres account.
            shutil.chown(self.dir, user="postgres", group="postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv, timeout=60):
        done = subprocess.run(
            self._as + [str(self.bin / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}\n{done.stderr}")
        return done

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://root@127.0.0.1:{self.port}/{db}"

    def url(self, db: str = "slimy") -> str:
        return f"postgres://root@127.0.0.1:{self.port}/{db}"

    def init(self) -> PrivatePostgres:
        self._run("initdb", "-D", str(self.data), "-U", "root", "-A", "trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='{self.dir}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", opts, "-w", "-t", "60", "start", timeout=90
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90)

    def running(self) -> bool:
        return (
            subprocess.run(
                self._as + [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True
            ).returncode
            == 0
        )

    def create_database(self, name: str = "slimy") -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def manage(env: dict, *args, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def pause(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def resume(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)
