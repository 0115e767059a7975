"""SlimyThreadWorker: many I/O-bound jobs in flight in ONE process (chat replies waiting on the LLM).

A chat reply spends about all its time waiting for the provider; a forking worker pays a process
(~60 MB, a fork) per reply in flight. This worker keeps up to THREADS jobs running on daemon threads
of one process. It shares the batch worker's machinery (queues.batchworker): ids popped with one
`LMPOP` (priority order, paused queues skipped), started with one statement; each job then runs on a
thread and records its own outcome (one statement for a completion). Each thread keeps its own
database session (Django's are per thread; CONN_MAX_AGE applies), so sessions <= THREADS.

Guarantees: as the batch worker — at-least-once through the ledger and the reconciler, retries,
priorities, cancellation (`check_cancelled`, results of cancelled jobs discarded), warm shutdown waits
for the jobs in flight, cold shutdown hands them back to their retry policy. The hard timeout cannot
use SIGALRM (one per process): a job past its timeout gets `JobTimeoutException` raised in its thread
(checked every POLL seconds), which takes effect as soon as the thread runs Python code again — a call
blocked in C (a socket read) returns first, so I/O must carry its own timeout (the LLM client does).
What it leaves out: per-job process isolation (use SlimyWorker for jobs that may crash the process).
"""

from __future__ import annotations

import ctypes
import logging
import queue as queue_module
import threading
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Retry
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import DequeueTimeout, StopRequested
from rq.timeouts import JobTimeoutException
from rq.worker.base import WorkerStatus

from queues import runner
from queues.batchworker import SlimyBatchWorker
from queues.definitions import registry
from queues.fastpath import job_complete_batch, job_start_batch
from queues.worker import PAUSE_RECHECK_SECONDS

logger = logging.getLogger("queues.worker")

POLL = 0.1  # seconds between checks for timeouts and free slots while every thread is busy
HEARTBEAT_SECONDS = 5


class SlimyThreadWorker(SlimyBatchWorker):
    def __init__(self, *args, threads: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads = threads or settings.WORKER_THREADS
        self._inbox: queue_module.Queue = queue_module.Queue()
        self._lock = threading.Condition()
        self._inflight: dict[str, tuple[int | None, float, int]] = {}  # id -> (thread ident, started, timeout)
        self._threads: list[threading.Thread] = []

    def work(self, burst=False, logging_level=None, date_format=DEFAULT_LOGGING_DATE_FORMAT,
             log_format=DEFAULT_LOGGING_FORMAT, max_jobs=None, max_idle_time=None, with_scheduler=False,
             dequeue_strategy=None) -> bool:
        self._begin(burst, logging_level, date_format, log_format, with_scheduler)
        self._threads = [threading.Thread(target=self._thread_main, name=f"slimy-job-{i}", daemon=True)
                         for i in range(self.threads)]
        for thread in self._threads:
            thread.start()
        done, idle_since, beat, wait = 0, time.monotonic(), 0.0, 1.0
        try:
            while not self._stop_requested:
                if time.monotonic() - beat > HEARTBEAT_SECONDS:
                    self.heartbeat()
                    beat = time.monotonic()
                if self.should_run_maintenance_tasks:
                    self.run_maintenance_tasks()
                self._enforce_timeouts()
                free = self.threads - len(self._inflight)
                if max_jobs is not None:
                    free = min(free, max_jobs - done)
                    if free <= 0 and not self._inflight:
                        break
                if free <= 0:
                    with self._lock:
                        self._lock.wait(POLL)
                    continue
                try:
                    self.check_for_suspension(burst)
                    keys = [queue.key for queue in self._active_queues()]
                    if not keys:
                        if burst and not self._inflight:
                            break
                        time.sleep(PAUSE_RECHECK_SECONDS)
                        continue
                    # Block only when nothing runs; otherwise poll, so timeouts and shutdown stay responsive.
                    ids = self._pop(keys, free, block=not burst and not self._inflight)
                    wait = 1.0
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    wait = self._wait_for_redis(exc, wait)
                    continue
                except (StopRequested, DequeueTimeout):
                    break
                if not ids:
                    if not self._inflight:
                        if burst or (max_idle_time is not None and time.monotonic() - idle_since > max_idle_time):
                            break
                    else:
                        with self._lock:
                            self._lock.wait(POLL)
                    continue
                done += self._dispatch(ids)
                idle_since = time.monotonic()
            self._drain()  # warm shutdown / burst end: the jobs in flight finish
        finally:
            for _ in self._threads:
                self._inbox.put(None)
            runner.batch_worker_name = None
            self.teardown()
        return bool(done)

    def _dispatch(self, ids: list[str]) -> int:
        close_old_connections()
        jobs = job_start_batch(job_ids=ids, worker_name=self.name)
        for skipped in set(ids) - {str(job.pk) for job in jobs}:
            logger.info("job %s is not waiting; skipped", skipped)
        with self._lock:
            for job in jobs:
                definition = registry.get(job.job_type)
                self._inflight[str(job.pk)] = (None, time.monotonic(), definition.timeout if definition else 60)
                self._pending.add(str(job.pk))
            self._state = WorkerStatus.BUSY if self._inflight else WorkerStatus.IDLE
        for job in jobs:
            self._inbox.put(job)
        return len(jobs)

    def _drain(self) -> None:
        while self._inflight:
            self._enforce_timeouts()
            with self._lock:
                self._lock.wait(POLL)

    # --- on a job thread
    def _thread_main(self) -> None:
        while True:
            job = self._inbox.get()
            if job is None:
                connections.close_all()
                return
            close_old_connections()  # this thread's session: replaced when broken or past CONN_MAX_AGE
            job_id = str(job.pk)
            with self._lock:
                _, started, timeout = self._inflight[job_id]
                self._inflight[job_id] = (threading.get_ident(), started, timeout)
            try:
                self._run_one(job)
            except JobTimeoutException:
                # The timeout landed outside the job's own code (while its outcome was being recorded):
                # close the attempt if it is still open (a no-op for a record no longer started).
                self._recover(job_id, "job exceeded its timeout")
            except (DatabaseError, RedisError, OSError) as exc:
                # The runner could not record the outcome (ledger or Redis down). The thread lives on;
                # the job goes back to its retry policy, through the reconciler if the ledger is down.
                logger.error("job %s: outcome not recorded (%s); handing it back", job_id, exc)
                connections.close_all()
                self._recover(job_id, f"worker could not record the outcome: {exc}")
            except Exception as exc:  # noqa: BLE001 - the runner re-raised; a job thread must never die
                logger.exception("job %s: unexpected error; handing it back", job_id)
                self._recover(job_id, f"unexpected error: {exc.__class__.__name__}")
            finally:
                self._finish(job_id)

    def _finish(self, job_id: str) -> None:
        # A timeout is raised at most once per job; if it arrives here, the bookkeeping is simply redone.
        while True:
            try:
                with self._lock:
                    self._inflight.pop(job_id, None)
                    self._pending.discard(job_id)
                    if not self._inflight:
                        self._state = WorkerStatus.IDLE
                    self._lock.notify_all()
                return
            except JobTimeoutException:
                continue

    def _run_one(self, job) -> None:
        deferred = []
        outcome = runner.execute_started(job, defer_complete=lambda j, result, duration: deferred.append((result, duration)),
                                         time_limit=None)
        if deferred:
            result, duration = deferred[0]
            runner.job_completed(job, duration, bool(job_complete_batch(outcomes=[(job, result)])))
        elif isinstance(outcome, Retry):
            self._push_retry(job)

    # --- timeouts
    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        with self._lock:
            # Under the lock, so the job is still this thread's (it leaves _inflight under the lock).
            for job_id, (ident, started, timeout) in list(self._inflight.items()):
                if ident is None or timeout <= 0 or now - started <= timeout:
                    continue
                self._inflight[job_id] = (None, float("inf"), timeout)  # once per job
                logger.warning("job %s exceeded its %s s timeout; interrupting its thread", job_id, timeout)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                           ctypes.py_object(JobTimeoutException))
