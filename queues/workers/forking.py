"""The RQ-based workers: the forking `SlimyWorker` (a process per job) and `SlimySimpleWorker` (tests).

The default worker is the runtime (queues.workers.runtime); these remain for jobs that need a process
of their own (`--worker-class queues.worker.SlimyWorker`) and for in-process tests.

What they add to RQ's workers:
- each named queue is expanded into its priority lists (all `.high` lists first, then normal, then `.low`);
- a liveness key refreshed by a thread, so the reconciler can tell within WORKER_TTL that a worker
  died (RQ alone notices after its heartbeat TTL plus a maintenance pass of up to 10 minutes);
- a job whose work-horse was killed, or that a cold shutdown interrupted, is handed to its retry policy;
- Django database connections are never shared across fork() and are closed when a horse exits;
- a queue paused from the admin (a Redis key per queue) is skipped when dequeueing: its jobs wait,
  submissions are still accepted. The pause keys are re-read at most every PAUSE_RECHECK_SECONDS;
- a fair-shared queue (FAIR_QUEUES) is popped from its tenants' lines (queues.fairness), before the
  other queues, and the tenant's slot is released once the job's execution ends.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import DatabaseError, connections
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, Worker
from rq.worker import WorkerStatus

from queues.constants import PRIORITY_ORDER, QueueName, base_queue_name, rq_queue_name
from queues.fairness import fair_pop, fair_release, fair_wake_key
from queues.keys import (  # noqa: F401 - re-exported: these names were imported from here
    ALIVE_KEY,
    PAUSED_KEY,
    RECOVER_KEY,
    SLOTS_KEY,
    SUSPECT_KEY,
    alive_key,
    paused_key,
    slots_key,
    suspect_key,
)
from queues.metrics import enter_work_horse
from queues.services import job_recover_abandoned

logger = logging.getLogger("queues.worker")

# How stale a worker's view of the paused queues may be; also the longest single blocking pop.
PAUSE_RECHECK_SECONDS = 1
_PR_SET_PDEATHSIG = 1


def paused_queue_names(connection) -> set[str]:
    names = list(QueueName.values)
    values = connection.mget([paused_key(name) for name in names])
    return {name for name, value in zip(names, values) if value is not None}


def expand_priorities(queues: list[Queue]) -> list[Queue]:
    """[chat, audit] → [chat.high, audit.high, chat, audit, chat.low, audit.low]; other names kept."""
    base: list[str | Queue] = []
    for queue in queues:
        name = base_queue_name(queue.name)
        if name in QueueName.values:
            if name not in base:
                base.append(name)
        else:
            base.append(queue)
    expanded: list[Queue] = []
    for priority in PRIORITY_ORDER:
        for item in base:
            if isinstance(item, str):
                # Same class as the caller's queues (django-rq passes its DjangoRQ subclass).
                expanded.append(
                    type(queues[0])(
                        rq_queue_name(item, priority), connection=queues[0].connection, serializer=queues[0].serializer
                    )
                )
            elif priority == PRIORITY_ORDER[0]:
                expanded.append(item)
    return expanded


# The mixin is only ever combined with one of RQ's worker classes (below), whose attributes and methods it
# uses (connection, name, queues, set_state, ...): to the type checker it is a Worker.
if TYPE_CHECKING:
    _WorkerBase = Worker
else:
    _WorkerBase = object


class LedgerWorkerMixin(_WorkerBase):
    _ordered_queues: list[Queue]

    def __init__(self, queues, *args, **kwargs):
        if isinstance(queues, (Queue, str)):
            queues = [queues]
        queues = [q if isinstance(q, Queue) else Queue(q, connection=kwargs.get("connection")) for q in queues]
        kwargs.setdefault("worker_ttl", max(settings.WORKER_TTL, 15))
        super().__init__(expand_priorities(queues), *args, **kwargs)
        self._alive_stop = threading.Event()
        self._alive_thread: threading.Thread | None = None
        self._paused: set[str] = set()
        self._paused_checked = float("-inf")
        self._fair_slot: tuple[str, str] | None = None  # (queue, job id) popped from a tenant's line

    # --- paused queues
    def _paused_names(self) -> set[str]:
        if time.monotonic() - self._paused_checked >= PAUSE_RECHECK_SECONDS:
            try:
                self._paused = paused_queue_names(self.connection)
            except (RedisError, OSError):
                logger.warning("worker %s: could not read paused queues; keeping the last known set", self.name)
            self._paused_checked = time.monotonic()
        return self._paused

    def _active_queues(self) -> list[Queue]:
        paused = self._paused_names()
        return [q for q in self.queues if base_queue_name(q.name) not in paused]

    def _use_queues(self, active: list[Queue]) -> None:
        # Only replace the list when the set changed, so a rotating dequeue strategy keeps its place.
        if {q.name for q in active} != {q.name for q in self._ordered_queues}:
            self._ordered_queues = active

    # --- fair-shared queues (FAIR_QUEUES): popped from their tenants' lines, one job at a time
    def _split_fair(self, active: list[Queue]) -> tuple[list[str], list[Queue]]:
        fair = list(
            dict.fromkeys(base_queue_name(q.name) for q in active if base_queue_name(q.name) in settings.FAIR_QUEUES)
        )
        return fair, [q for q in active if base_queue_name(q.name) not in fair]

    def _fair_dequeue(self, names: list[str]):
        from queues.services.fair import fair_plain_drain

        for name in names:
            fair_plain_drain(conn=self.connection, queue=name)  # strays on the plain lists join their lines
            while (popped := fair_pop(conn=self.connection, queue=name, worker=self.name)) is not None:
                key = Queue.redis_queue_namespace_prefix + rq_queue_name(name, popped.priority)
                result = self.queue_class._fetch_dequeued_job(
                    self.connection,
                    key,
                    popped.job_id,
                    job_class=self.job_class,
                    serializer=self.serializer,
                    death_penalty_class=self.death_penalty_class,
                )
                if result is None:  # RQ's copy is gone (deleted): nothing to run here
                    fair_release(conn=self.connection, queue=name, job_ids=[popped.job_id])
                    continue
                self._fair_slot = (name, popped.job_id)
                return result
        return None

    def execute_job(self, job, queue):
        try:
            return super().execute_job(job, queue)
        finally:
            slot, self._fair_slot = self._fair_slot, None
            if slot is not None:
                try:
                    fair_release(conn=self.connection, queue=slot[0], job_ids=[slot[1]])
                except (RedisError, OSError):
                    logger.warning(
                        "worker %s: fair slot of job %s not released; the reconciler frees it", self.name, slot[1]
                    )

    def dequeue_job_and_maintain_ttl(self, timeout, max_idle_time=None):
        """RQ's dequeue, restricted to the queues not paused; fair-shared queues first, from their tenants'
        lines (queues.fairness).

        A blocking pop lasts at most PAUSE_RECHECK_SECONDS, so a pause takes effect within about
        two seconds; with every queue paused the worker idles (heartbeating) until one is resumed. While
        it blocks on other queues' lists, a fair queue's new job waits up to that long for this worker.
        """
        if timeout is None:  # burst mode: one non-blocking pass
            fair, active = self._split_fair(self._active_queues())
            result = self._fair_dequeue(fair)
            if result is not None or not active:
                return result
            self._use_queues(active)
            return super().dequeue_job_and_maintain_ttl(None, max_idle_time)
        idle_since = time.monotonic()
        while True:
            if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                return None
            fair, active = self._split_fair(self._active_queues())
            if fair:
                try:
                    result = self._fair_dequeue(fair)
                except (RedisError, OSError) as exc:
                    logger.error("worker %s: fair dequeue failed (%s); retrying", self.name, exc)
                    time.sleep(PAUSE_RECHECK_SECONDS)
                    continue
                if result is not None:
                    return result
            if not active and not fair:
                self.set_state(WorkerStatus.IDLE)
                self.procline("All queues paused")
                self.heartbeat()
                time.sleep(PAUSE_RECHECK_SECONDS)
                continue
            step = max(1, min(timeout, PAUSE_RECHECK_SECONDS))
            if not active:
                self.set_state(WorkerStatus.IDLE)
                self.heartbeat()
                try:
                    self.connection.blpop([fair_wake_key(n) for n in fair], timeout=step)
                except (RedisError, OSError) as exc:
                    logger.error("worker %s: waiting for fair queues failed (%s); retrying", self.name, exc)
                    time.sleep(PAUSE_RECHECK_SECONDS)
                continue
            self._use_queues(active)
            result = super().dequeue_job_and_maintain_ttl(step, max_idle_time=step)
            if result is not None:
                return result

    # --- liveness
    def _beat(self):
        ttl = max(settings.WORKER_TTL, 3)
        while not self._alive_stop.is_set():
            try:
                self.connection.set(alive_key(self.name), "1", ex=ttl)
            except (RedisError, OSError):
                logger.warning("worker %s: liveness beat failed", self.name)
            self._alive_stop.wait(ttl / 3)

    def bootstrap(self, *args, **kwargs):
        super().bootstrap(*args, **kwargs)
        self.connection.set(alive_key(self.name), "1", ex=max(settings.WORKER_TTL, 3))
        self._alive_thread = threading.Thread(target=self._beat, name="slimy-liveness", daemon=True)
        self._alive_thread.start()

    def teardown(self):
        self._stop_beating()
        super().teardown()

    def _stop_beating(self):
        self._alive_stop.set()
        try:
            self.connection.delete(alive_key(self.name))
        except (RedisError, OSError):
            pass

    # --- recovery of jobs whose process died
    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        super().handle_job_failure(
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution
        )
        self._recover(job.id, exc_string.strip().splitlines()[-1] if exc_string.strip() else "work-horse died")

    def _recover(self, job_id: str, reason: str) -> None:
        # The runner records every outcome it sees; a record still `started` means the process died.
        try:
            job_recover_abandoned(job_id=job_id, reason=reason[:500])
        except DatabaseError:
            # Fault suite finding (scenario 8): with PostgreSQL down neither the runner nor this could
            # record the failure, and the record stayed `started` under a live worker forever. Leave
            # it to the reconciler, which retries once the database is back.
            logger.warning("worker %s: ledger unreachable; job %s left to the reconciler", self.name, job_id)
            connections.close_all()
            try:
                self.connection.sadd(RECOVER_KEY, f"{job_id} {self.name}")
            except (RedisError, OSError):
                logger.error("worker %s: could not report job %s for recovery", self.name, job_id)
        self._release_db_before_fork()

    def _release_db_before_fork(self):
        pass

    def request_force_stop(self, signum, frame):
        job_id = self.get_current_job_id()
        try:
            super().request_force_stop(signum, frame)
        finally:
            if job_id:
                self._stop_beating()
                self._recover(job_id, "worker cold shutdown interrupted the job")


class SlimyWorker(LedgerWorkerMixin, Worker):
    """Forking worker: each job runs in a work-horse process (isolation, hard timeouts)."""

    def fork_work_horse(self, job, queue):
        # A connection opened in the parent must never be used by the child (and vice versa).
        connections.close_all()
        super().fork_work_horse(job, queue)

    def setup_work_horse_signals(self):
        super().setup_work_horse_signals()
        self._alive_stop.set()  # the horse must not beat for its parent
        enter_work_horse()  # metrics: share the worker's horse file set instead of one per fork
        try:
            # If the worker itself is killed, take the horse with it so no job runs unsupervised.
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    def perform_job(self, job, queue, execution):
        try:
            return super().perform_job(job, queue, execution)
        finally:
            # The horse exits with os._exit(): close sessions instead of abandoning them.
            connections.close_all()

    def _release_db_before_fork(self):
        connections.close_all()


class SlimySimpleWorker(LedgerWorkerMixin, SimpleWorker):
    """In-process worker: no fork per job, several times the throughput; used by tests and benchmarks."""
