"""Real Slimy processes for end-to-end and fault tests: workers, the reconciler, the web server."""

import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the database the test session uses (pytest-django's test database)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return (
        f"postgres://{db.get('USER') or 'root'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    )


def process_env(redis_url: str, **extra) -> dict:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=redis_url,
        EXTRA_JOB_MODULES="tests.jobs",
        LOG_FORMAT="json",
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Proc:
    """A child process (own session) whose combined output goes to a log file (tests and benchmarks)."""

    # Every Proc not yet stopped: a test that fails before stopping its worker must not leave it
    # running on the session's Redis, where it would take the jobs of later tests.
    live: "weakref.WeakSet[Proc]" = weakref.WeakSet()

    def __init__(self, argv, env, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        Proc.live.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"{self.popen.args!r} did not finish in {timeout} s:\n{self.output()[-3000:]}") from None

    def stop(self, timeout: float = 20) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()
        Proc.live.discard(self)


def stop_leftover_processes() -> list[str]:
    """Stop every Proc still running; return their command lines (a test that leaked one)."""
    leaked = []
    for proc in list(Proc.live):
        if proc.popen.poll() is None:
            leaked.append(str(proc.popen.args))
        proc.stop(timeout=5)
    return leaked


FORKING = "queues.worker.SlimyWorker"


def start_worker(
    tmp_path,
    env,
    queues=("chat", "database", "audit"),
    *,
    name=None,
    simple=False,
    scheduler=True,
    burst=False,
    worker_class=None,
) -> Proc:
    """`manage.py rqworker`: the worker runtime by default; `worker_class=FORKING` for the forking worker."""
    argv = [sys.executable, "manage.py", "rqworker", *queues]
    if worker_class:
        argv += ["--worker-class", worker_class]
    if scheduler:
        argv.append("--with-scheduler")
    if burst:
        argv.append("--burst")
    if simple:
        argv += ["--worker-class", "queues.worker.SlimySimpleWorker"]
    if name:
        argv += ["--name", name]
    log = tmp_path / f"worker-{name or len(list(tmp_path.glob('worker-*')))}.log"
    return Proc(argv, env, log)


def wait_for(predicate, timeout=30.0, message="condition", interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)
