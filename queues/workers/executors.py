"""The runtime's executors and their guards: bounded daemon thread pools and the hard-timeout watchdog.

- `DaemonPool`: a bounded pool whose threads start on first use and never hold the process up at exit
  (a blocked job thread must not stop a cold shutdown; the standard ThreadPoolExecutor joins its threads).
  The runtime keeps one per queue for blocking synchronous jobs (size = the queue's slots) and one small
  pool for the database work of async jobs (WORKER_DB_THREADS).
- `Watchdog`: the hard timeout of synchronous jobs running on threads. SIGALRM works for one thread
  only, so a job past its timeout gets `JobTimeoutException` raised in its own thread
  (`PyThreadState_SetAsyncExc`, as Dramatiq's time limits do). It takes effect as soon as the thread
  runs Python code again: a call blocked in C returns first, so blocking I/O must carry its own timeout.
  Async jobs are bounded by `asyncio.timeout` in the runner instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import queue as queue_module
import threading
import time
from concurrent.futures import Future

from rq.timeouts import JobTimeoutException

logger = logging.getLogger("queues.worker")


class DaemonPool:
    def __init__(self, size: int, name: str, *, on_start=None, on_exit=None):
        self.size = max(int(size), 1)
        self.name = name
        self._inbox: queue_module.SimpleQueue = queue_module.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads waiting for work
        self._queued = 0  # work submitted and not yet taken
        self._lock = threading.Lock()
        self._on_start = on_start
        self._on_exit = on_exit

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            self._queued += 1
            # A new thread only when every thread is busy with earlier work (threads start lazily).
            if self._queued > self._idle and len(self._threads) < self.size:
                thread = threading.Thread(target=self._main, name=f"{self.name}-{len(self._threads) + 1}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._inbox.put((future, fn, args, kwargs))
        return future

    def _main(self) -> None:
        if self._on_start:
            self._on_start()
        try:
            while True:
                with self._lock:
                    self._idle += 1
                item = self._inbox.get()
                with self._lock:
                    self._idle -= 1
                    if item is not None:
                        self._queued -= 1
                if item is None:
                    return
                future, fn, args, kwargs = item
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                        future.set_exception(exc)
        finally:
            if self._on_exit:
                self._on_exit()

    def shutdown(self, wait: float = 0.0) -> None:
        """Idle threads exit (closing their database sessions); busy ones are waited for up to `wait` s."""
        for _ in self._threads:
            self._inbox.put(None)
        deadline = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))


class Watchdog:
    """Deadlines of synchronous jobs running on threads; `enforce()` interrupts the overdue ones."""

    def __init__(self):
        self._lock = threading.Lock()
        # Keyed by thread: one thread runs one job at a time, while two attempts of one job (cancel + retry)
        # may run at once in one process. thread ident -> (job id, deadline, timeout)
        self._running: dict[int, tuple[str, float, int]] = {}

    @contextlib.contextmanager
    def limit(self, job_id: str, seconds: int):
        """Run the block under a hard timeout of `seconds` (0 or less: none)."""
        if seconds <= 0:
            yield
            return
        ident = threading.get_ident()
        with self._lock:
            self._running[ident] = (job_id, time.monotonic() + seconds, seconds)
        try:
            yield
        finally:
            # Under the lock: once removed, the job can no longer be interrupted (enforce holds it too).
            with self._lock:
                self._running.pop(ident, None)

    def enforce(self) -> list[str]:
        now = time.monotonic()
        fired = []
        with self._lock:
            for ident, (job_id, deadline, seconds) in list(self._running.items()):
                if now <= deadline:
                    continue
                del self._running[ident]  # once per job
                logger.warning("job %s exceeded its %s s timeout; interrupting its thread", job_id, seconds)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(JobTimeoutException))
                fired.append(job_id)
        return fired
