"""A runtime process's heartbeat and its in-process reconciler, each on a thread of its own.

Heartbeat: every WORKER_HEARTBEAT_SECONDS, independent of what the jobs do (a job blocking its thread or
the event loop does not stop it), the process refreshes its liveness key (TTL WORKER_TTL) and the
dashboard's slot hash (`slimy:worker:slots:{name}`: host, pid, `{queue}:busy`, `{queue}:slots`), and
now and then RQ's own worker key. A process frozen (SIGSTOP) longer than WORKER_TTL loses its key, and
the reconciler hands its jobs to their retry policy; when it wakes, the attempt fence refuses whatever
its old attempts still try to record.

Reconciler: every RECONCILE_INTERVAL one runtime process (a Redis lock decides which) runs
`queues_reconcile` — so a dead process's jobs are noticed within seconds without a process of its own —
and, every PERIODIC_HOOKS_INTERVAL, the periodic hooks the `queues_reconcile --loop` command runs. The hooks
run in a short-lived child process (`manage.py queues_hooks`): some are heavy Python work (verifying the
whole audit chain), which in this process would hold the GIL its jobs' pickups wait on (a burst of 20-40 ms
pickups while the chain of 6,000 rows was checked).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from redis.exceptions import RedisError

from queues import signals
from queues.keys import HOOKS_LOCK_KEY, RECONCILE_LOCK_KEY, alive_key, slots_key
from queues.reconcile import queues_reconcile

logger = logging.getLogger("queues.worker")

RQ_HEARTBEAT_EVERY = 10  # seconds between refreshes of RQ's own worker key (its TTL is minutes)


class Heartbeat:
    def __init__(self, worker, slots_of):
        """`slots_of()` returns {queue: (busy, slots)}; read without a lock (a beat may be one job stale)."""
        self.worker = worker
        self.slots_of = slots_of
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.host = socket.gethostname()

    @property
    def ttl(self) -> int:
        return max(int(settings.WORKER_TTL), 2)

    def beat(self) -> None:
        conn = self.worker.connection
        mapping: dict[str, object] = {"host": self.host, "pid": os.getpid()}
        for queue, (busy, slots) in self.slots_of().items():
            mapping[f"{queue}:busy"] = busy
            mapping[f"{queue}:slots"] = slots
        signals.worker_heartbeat.send(sender=type(self.worker), worker=self.worker)  # e.g. buffered metrics
        succeeded, failed = self.worker.take_counts()
        with conn.pipeline(transaction=False) as pipe:
            if succeeded:
                pipe.hincrby(self.worker.key, "successful_job_count", succeeded)
            if failed:
                pipe.hincrby(self.worker.key, "failed_job_count", failed)
            pipe.set(alive_key(self.worker.name), "1", ex=self.ttl)
            pipe.hset(slots_key(self.worker.name), mapping=mapping)
            pipe.expire(slots_key(self.worker.name), self.ttl)
            pipe.execute()

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._main, name="slimy-heartbeat", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        interval = max(min(settings.WORKER_HEARTBEAT_SECONDS, self.ttl / 3), 0.2)
        last_rq = 0.0
        while not self.stop_event.wait(interval):
            try:
                self.beat()
                if time.monotonic() - last_rq >= RQ_HEARTBEAT_EVERY:
                    self.worker.heartbeat()
                    last_rq = time.monotonic()
            except (RedisError, OSError):
                logger.warning("worker %s: heartbeat failed", self.worker.name)

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(5)
        try:
            self.beat()  # the last counts
            self.worker.connection.delete(alive_key(self.worker.name), slots_key(self.worker.name))
        except (RedisError, OSError):
            pass


HOOKS_NICENESS = 10  # how much lower the periodic hooks' child runs than the worker (see _hooks_child)


class InProcessReconciler:
    def __init__(self, connection, name: str, activity: Callable[[], int]):
        """`activity()`: a count that grows as this process starts jobs. While it grows, due hooks wait for a
        quiet pass, up to PERIODIC_HOOKS_DEFER_SECONDS: starting their child (a Python and Django start-up,
        mostly in the kernel) made the pickups of the next two seconds several milliseconds slower, even
        at a lower priority."""
        self.connection = connection
        self.name = name
        self.activity = activity
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.hooks_child: subprocess.Popen | None = None
        self._last_activity = 0  # activity() at the previous pass
        self._deferred_since: float | None = None

    def start(self) -> None:
        self._last_activity = self.activity()
        self._thread = threading.Thread(target=self._main, name="slimy-reconciler", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        interval = max(float(settings.RECONCILE_INTERVAL), 0.2)
        hooks = list(settings.PERIODIC_HOOKS)
        while not self.stop_event.wait(interval):
            try:
                # One process per pass: the lock expires just before the next pass is due.
                if self.connection.set(RECONCILE_LOCK_KEY, self.name, nx=True, px=max(int(interval * 900), 100)):
                    close_old_connections()
                    queues_reconcile(scheduler_lag=0)
                hooks_idle = self.hooks_child is None or self.hooks_child.poll() is not None
                if (
                    hooks
                    and hooks_idle
                    and not self._defer_hooks()
                    and self.connection.set(
                        HOOKS_LOCK_KEY, self.name, nx=True, ex=max(int(settings.PERIODIC_HOOKS_INTERVAL), 1)
                    )
                ):
                    self._deferred_since = None
                    self.hooks_child = _hooks_child()
            except (RedisError, OSError, DatabaseError) as exc:
                # Outages are what this loop exists for: keep going, the next pass catches up.
                logger.warning("worker %s: reconcile pass failed: %s", self.name, exc)
                close_old_connections()
            except Exception:  # a hook's bug must not end the process's reconciler
                logger.exception("worker %s: reconcile pass failed", self.name)

    def _defer_hooks(self) -> bool:
        """Whether due hooks wait for a quiet pass: jobs started since the last pass, and they have not waited
        PERIODIC_HOOKS_DEFER_SECONDS yet (the lock's absence says they are due, for every process)."""
        seen, self._last_activity = self._last_activity, self.activity()
        if seen == self._last_activity:
            return False  # quiet
        if self.connection.exists(HOOKS_LOCK_KEY):
            self._deferred_since = None  # not due: another process ran them, or this one, lately
            return False
        now = time.monotonic()
        if self._deferred_since is None:
            self._deferred_since = now
        return now - self._deferred_since < settings.PERIODIC_HOOKS_DEFER_SECONDS

    def stop(self) -> None:
        self.stop_event.set()
        child = self.hooks_child
        if child is not None and child.poll() is None:
            # The hooks are idempotent (each in its own transactions): the next worker's pass runs them again.
            child.terminate()
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()


def _hooks_child() -> subprocess.Popen:
    """`manage.py queues_hooks` with this process's settings and environment, its output beside ours; the
    reconciler looks at it again on its next passes (no second one while it runs), never waits for it."""
    env = dict(os.environ, REDIS_URL=settings.REDIS_URL)
    url = os.environ.get("DATABASE_URL")
    if url and connection.vendor == "postgresql":
        # The database this process uses, by name (a test run's own differs from the URL's).
        parts = urllib.parse.urlsplit(url)
        env["DATABASE_URL"] = urllib.parse.urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))
    child = subprocess.Popen([sys.executable, str(settings.BASE_DIR / "manage.py"), "queues_hooks"], env=env)
    try:
        # Maintenance, with no one waiting on it: on a small host its Django start-up and the chain's check
        # took a core the jobs' pickups wanted (pickups of 10-40 ms while it ran). At a lower priority it
        # runs when the jobs leave it room.
        os.setpriority(os.PRIO_PROCESS, child.pid, min(os.getpriority(os.PRIO_PROCESS, 0) + HOOKS_NICENESS, 19))
    except OSError as exc:  # already gone, or a platform without priorities: it runs as it is
        logger.debug("periodic hooks at normal priority: %s", exc)
    return child


def hooks_run(hooks) -> int:
    """Run each hook once, each failure logged and the others still run; returns how many failed."""
    failed = 0
    for hook in hooks:
        try:
            hook()
        except Exception:
            logger.exception("periodic hook %s failed", getattr(hook, "__qualname__", hook))
            failed += 1
    return failed
