"""What the scenarios observe from outside a process tree: memory (PSS), CPU time, PostgreSQL sessions.

- PSS (proportional set size: a page shared by n processes counts 1/n in each) from
  /proc/<pid>/smaps_rollup, summed over a process and all its descendants, so forked children
  (RQ's work-horses, gunicorn's workers) are included and shared pages are counted once overall.
- CPU: user + system time of every live process in the tree, plus its reaped children's
  (`children_user/system`): a horse that exited still counts, through the parent that reaped it.
- PostgreSQL sessions of a worker: rows of pg_stat_activity whose `application_name` is the tag
  the bench put in the worker's DATABASE_URL (`?application_name=...`, passed by Django to libpq),
  OR whose `client_port` is the local port of one of the tree's TCP connections to the server. The
  port match keeps the count right even for code that opens connections without Django's settings.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psutil


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants that are alive now (empty when the process is gone)."""
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def pss_bytes(pid: int) -> int:
    """PSS of one process (0 when it is gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def tree_pss_bytes(pid: int, *, exclude=lambda proc: False) -> int:
    return sum(pss_bytes(p.pid) for p in process_tree(pid) if not _safe(exclude, p))


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for proc in process_tree(pid):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def tree_processes(pid: int, *, exclude=lambda proc: False) -> list[psutil.Process]:
    return [p for p in process_tree(pid) if not _safe(exclude, p)]


def _safe(predicate, proc) -> bool:
    try:
        return bool(predicate(proc))
    except psutil.Error:
        return True  # gone while we looked: not part of the tree any more


def with_application_name(database_url: str, name: str) -> str:
    """`database_url` with `?application_name=name` (replacing any), for pg_stat_activity filtering."""
    parts = urlsplit(database_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "application_name"] + [("application_name", name)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _server_port(database_url: str) -> int:
    return urlsplit(database_url).port or 5432


@dataclass
class SessionCounter:
    """Counts the PostgreSQL sessions a process tree holds, through a connection of its own."""

    database_url: str
    application_name: str
    pid: int
    seen: set = field(default_factory=set)  # (backend pid, backend start): every session ever observed

    def __post_init__(self):
        import psycopg

        base = urlsplit(self.database_url)._replace(query="")
        self._conn = psycopg.connect(urlunsplit(base), autocommit=True, application_name="slimy-bench-observer")
        self._pg_port = _server_port(self.database_url)

    def client_ports(self) -> set[int]:
        ports = set()
        for proc in process_tree(self.pid):
            try:
                for conn in proc.net_connections(kind="tcp"):
                    if conn.raddr and conn.raddr.port == self._pg_port:
                        ports.add(conn.laddr.port)
            except psutil.Error:
                continue
        return ports

    def count(self) -> int:
        ports = sorted(self.client_ports())
        rows = self._conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND (application_name = %s OR client_port = ANY(%s))",
            [self.application_name, ports],
        ).fetchall()
        self.seen.update(rows)
        return len(rows)

    def close(self) -> None:
        self._conn.close()


class TreeSampler:
    """Peaks of a process tree's PSS and PostgreSQL sessions, sampled every `interval` s in a thread."""

    def __init__(self, pid: int, *, sessions: SessionCounter | None = None, interval: float = 0.2):
        self.pid = pid
        self.sessions = sessions
        self.interval = interval
        self.peak_pss_bytes = 0
        self.peak_sessions = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def start(self) -> TreeSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.sample()

    def sample(self) -> None:
        self.peak_pss_bytes = max(self.peak_pss_bytes, tree_pss_bytes(self.pid))
        if self.sessions is not None:
            self.peak_sessions = max(self.peak_sessions, self.sessions.count())
        self.samples += 1

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    @property
    def peak_pss_mb(self) -> float:
        return self.peak_pss_bytes / 2**20

    @property
    def sessions_opened(self) -> int:
        return len(self.sessions.seen) if self.sessions is not None else 0
