"""Watching many jobs from one web process: one Redis reader and one ledger poller fan out to every watcher.

An open event stream registers a `Watch` with its process's `OutputHub` instead of reading Redis and
PostgreSQL itself. The hub runs three tasks on the event loop:

- the reader: one connection, one `XREAD BLOCK` over the output logs of every watched job (each at
  the oldest cursor a watcher of it still needs); entries go to each watcher past its own cursor, so
  a watcher never sees an entry twice. A watcher that joins wakes the blocked read at once with
  `CLIENT UNBLOCK` (sent on the command pool), so its log is read without waiting for the timeout.
  It wakes `FANOUT_SLICE` watchers at a time and lets the loop run them before waking more;
- the poller: one query every `STATE_POLL_SECONDS` for a signature of the record of every watched job
  (in a thread, as the ORM is synchronous), then the records whose signature changed; a watcher may
  ask for a fresh read (a new segment started), which the next query serves;
- the ticker: wakes the watchers due a heartbeat or their time limit (`Watch.due`).

A process holds `1 + COMMAND_CONNECTIONS` Redis connections, whatever the number of streams. Under
ASGI the hub lives on the server's event loop; WSGI code (Django's test client, a gthread server)
reaches a hub on one background loop through `iterate_sync`.

It reads the output log only (the write side and the log's format are queues.output's) and knows
nothing about HTTP: queues.api.output turns watches into Server-Sent Events.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from queues.models import JobRecord
from queues.output import MAX_READ, output_entry, output_key

logger = logging.getLogger(__name__)

BLOCK_MS = 1_000  # longest blocking read; a joining watcher interrupts it, so this only bounds a lost wake-up
READ_PAUSE = 0.01  # s between two reads that found entries
READ_COUNT = 200  # entries per log per read: one busy job cannot starve the others
COMMAND_CONNECTIONS = 2  # drains, wake-ups, slot releases (all short commands)
STATE_POLL_SECONDS = 0.5
# A watcher whose client reads slower than its job writes is ended (it resumes with Last-Event-ID)
# rather than buffering without bound.
MAX_BUFFERED = 5_000
RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0)
# Streams woken by the reader between two turns of the event loop: each turn sends their events and
# serves whatever else is ready (other requests, the threads' answers), so a burst of entries for a
# thousand streams holds the loop for a few milliseconds at a time, not for the whole burst.
FANOUT_SLICE = 32
# How often the hub wakes streams that are due a heartbeat or their time limit (one timer for all,
# instead of one per stream and per wait).
TICK_SECONDS = 0.25


def parse_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def format_id(value: tuple[int, int]) -> str:
    return f"{value[0]}-{value[1]}"


@dataclass(eq=False)
class Watch:
    """One watcher of one job: entries past its cursor and the job's latest record, as they come."""

    job_id: str
    cursor: tuple[int, int]
    viewer: object = None
    entries: deque = field(default_factory=deque)
    job: JobRecord | None = None  # the latest JobRecord read for it (None: not read yet, or purged)
    job_read: int = 0  # bumped at every read of the record, so a waiter sees a fresh one
    signature: str | None = None  # of `job` (see _read_jobs)
    state_wanted: bool = True
    overflowed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    due: float = float("inf")  # monotonic time the stream wants to run even without news (heartbeat, end)

    @property
    def key(self) -> str:
        return output_key(self.job_id)


class OutputHub:
    """The per-process (per event loop) reader of output logs and job records for every open stream."""

    def __init__(self, redis_url: str):
        self.redis_url = redis_url
        self._watches: dict[str, set[Watch]] = {}  # output key -> its watchers
        self._cursors: dict[str, tuple[int, int]] = {}  # output key -> where the reader goes on from
        self._reader: aioredis.Redis | None = None
        self._reader_id: int | None = None
        self._commands: aioredis.Redis | None = None
        self._changed = asyncio.Event()  # the set of watched keys changed
        self._generation = 0  # bumped at every change; the reader records the one its read includes
        self._reading_generation = -1
        self._state_due = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._waker: asyncio.Task | None = None
        # One thread for the ledger: its database connection is reused from poll to poll.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slimy-job-states")
        self.draining = asyncio.Event()  # the server is shutting down: streams end between events
        self._releases: dict[str, set[str]] = {}  # sorted set -> members to remove (stream slots)
        self._releaser: asyncio.Task | None = None
        self._woken = 0  # streams woken by the reader since it last let the loop run them
        self._records: dict[str, tuple] = {}  # job id -> (signature, latest record) of every watched job

    # --- connections
    def commands(self) -> aioredis.Redis:
        if self._commands is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.redis_url,
                max_connections=COMMAND_CONNECTIONS,
                timeout=10,
                client_name="slimy-web-streams",
                socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
                socket_connect_timeout=2.0,
            )
            self._commands = aioredis.Redis(connection_pool=pool)
        return self._commands

    async def _reader_connection(self) -> aioredis.Redis:
        if self._reader is None:
            # No socket timeout: the read blocks up to BLOCK_MS on purpose (redis-py's default 5 s would
            # still be fine, but a timeout shorter than a block would turn every idle wait into an error).
            self._reader = aioredis.Redis.from_url(
                self.redis_url,
                single_connection_client=True,
                client_name="slimy-web-streams-reader",
                socket_timeout=None,
                socket_connect_timeout=2.0,
            )
            self._reader_id = await self._reader.client_id()
        return self._reader

    async def _reset_reader(self) -> None:
        reader, self._reader, self._reader_id = self._reader, None, None
        if reader is not None:
            try:
                await reader.aclose()
            except (RedisError, OSError):
                pass

    # --- watchers
    def watch(self, *, job_id: str, cursor: str, viewer=None) -> Watch:
        watch = Watch(job_id=str(job_id), cursor=parse_id(cursor), viewer=viewer)
        watchers = self._watches.setdefault(watch.key, set())
        watchers.add(watch)
        known = self._cursors.get(watch.key)
        # The reader goes on from the oldest position any watcher of the log needs.
        self._cursors[watch.key] = watch.cursor if known is None else min(known, watch.cursor)
        self._ensure_running()
        self._state_due.set()
        self._key_set_changed()
        return watch

    def unwatch(self, watch: Watch) -> None:
        watchers = self._watches.get(watch.key)
        if watchers is None or watch not in watchers:
            return
        watchers.discard(watch)
        if not watchers:
            del self._watches[watch.key]
            self._cursors.pop(watch.key, None)
            self._key_set_changed()

    def want_state(self, watch: Watch) -> None:
        """Read this watcher's job record at the next poll, which starts now."""
        watch.state_wanted = True
        self._state_due.set()

    @property
    def watch_count(self) -> int:
        return sum(len(w) for w in self._watches.values())

    def drain(self) -> None:
        """Tell every open stream to end after its current event (the server is stopping)."""
        self.draining.set()
        for watchers in self._watches.values():
            for watch in watchers:
                watch.wake.set()

    # --- the reader
    def _key_set_changed(self) -> None:
        self._generation += 1
        self._changed.set()
        if self._waker is None or self._waker.done():
            self._waker = self._spawn(self._wake_reader())

    async def _wake_reader(self) -> None:
        """Interrupt a blocked XREAD until the reader runs one that includes the latest key set."""
        # Watchers joining together (a reconnect wave) are taken into one new read, not one read each.
        await asyncio.sleep(0.005)
        for _ in range(200):
            if self._reading_generation >= self._generation or self._reader_id is None:
                return
            try:
                await self.commands().client_unblock(self._reader_id)
            except (RedisError, OSError):
                return  # the reader's own timeout (BLOCK_MS) picks the new keys up
            await asyncio.sleep(0.002)

    async def _read_loop(self) -> None:
        failures = 0
        while True:
            if not self._watches:
                self._changed.clear()
                await self._changed.wait()
                continue
            streams: dict[Any, Any] = {key: format_id(cursor) for key, cursor in self._cursors.items()}
            try:
                reader = await self._reader_connection()
                self._reading_generation = self._generation
                # redis-py types the reply as a union of its RESP2 and RESP3 shapes; this is RESP2's list.
                answer: Any = await reader.xread(streams, count=READ_COUNT, block=BLOCK_MS)
                failures = 0
            except (RedisError, OSError) as exc:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.warning("output reader: Redis failed (%s); retrying in %.1f s", exc, delay)
                await self._reset_reader()
                await asyncio.sleep(delay)
                continue
            for key, items in answer or ():
                key = key.decode() if isinstance(key, bytes) else key
                await self._deliver(key, items, parse_id(streams[key]))
            if answer:
                # One read costs the same for 1 or 1,000 logs: let entries gather a moment (bounded
                # latency) instead of reading every log again for each new entry.
                await asyncio.sleep(READ_PAUSE)

    async def _deliver(self, key: str, items, start: tuple[int, int]) -> None:
        watchers = self._watches.get(key)
        if not watchers or not items:
            return
        entries = [output_entry(entry_id, fields) for entry_id, fields in items]
        positions = [parse_id(entry["id"]) for entry in entries]
        for watch in list(watchers):  # the set may change while the loop runs the woken streams
            if watch.cursor < start:
                continue  # joined during this read, further back: the next read starts from its cursor
            fresh = False
            for position, entry in zip(positions, entries):
                if position > watch.cursor:
                    watch.entries.append(entry)
                    watch.cursor = position
                    fresh = True
            if fresh:
                if len(watch.entries) > MAX_BUFFERED:
                    watch.overflowed = True
                watch.wake.set()
                self._woken += 1
                if self._woken >= FANOUT_SLICE:
                    # Let the loop send what the woken streams have (and serve other requests) before
                    # waking more: one read may bring entries for a thousand streams.
                    self._woken = 0
                    await asyncio.sleep(0)
        # Go on from the watcher furthest behind (the others skip what they already have).
        watchers = self._watches.get(key)
        if watchers:
            self._cursors[key] = min(watch.cursor for watch in watchers)

    # --- the poller
    async def _state_loop(self) -> None:
        while True:
            if not self._watches:
                self._state_due.clear()
                await self._state_due.wait()
                continue
            try:
                await asyncio.wait_for(self._state_due.wait(), STATE_POLL_SECONDS)
            except TimeoutError:
                pass
            self._state_due.clear()
            watches = [w for watchers in self._watches.values() for w in watchers]
            if not watches:
                continue
            ids = {w.job_id for w in watches}
            known = {job_id: self._records[job_id][0] for job_id in ids if job_id in self._records}
            try:
                signatures, records = await asyncio.get_running_loop().run_in_executor(self._db, _read_jobs, ids, known)
            except DatabaseError as exc:
                logger.warning("job state poller: database failed (%s)", exc)
                await asyncio.sleep(1.0)
                continue
            # What is kept: the latest record of every watched job with its signature (None: purged).
            self._records = {job_id: self._records[job_id] for job_id in known}
            for job_id in ids:
                signature = signatures.get(job_id)
                if job_id in records or signature is None:
                    self._records[job_id] = (signature, records.get(job_id))
            woken = 0
            for watch in watches:
                signature, job = self._records.get(watch.job_id, (None, None))
                # Wake a watcher only for news (or the fresh read it asked for): a thousand idle streams
                # must not all run every poll.
                if watch.state_wanted or watch.job_read == 0 or signature != watch.signature:
                    watch.job, watch.signature = job, signature
                    watch.job_read += 1
                    watch.state_wanted = False
                    watch.wake.set()
                    woken += 1
                    if woken % FANOUT_SLICE == 0:
                        await asyncio.sleep(0)  # a thousand jobs may finish at once: wake them in slices

    # --- the ticker
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            for watchers in self._watches.values():
                for watch in watchers:
                    if watch.due <= now:
                        watch.due = float("inf")
                        watch.wake.set()

    # --- plumbing
    def _spawn(self, coro) -> asyncio.Task:
        # A fresh context: the hub must not carry the request (log context, thread affinity) that started it.
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        task.add_done_callback(_log_crash)
        return task

    def _ensure_running(self) -> None:
        if self._tasks and all(not t.done() for t in self._tasks):
            return
        for task in self._tasks:
            task.cancel()
        self._tasks = [self._spawn(self._read_loop()), self._spawn(self._state_loop()), self._spawn(self._tick_loop())]

    def release_later(self, *, key: str, member: str) -> None:
        """Remove `member` from the sorted set `key` soon, batched with others (a thousand streams may
        end in the same instant: one pipeline, not a thousand round trips queueing for a connection)."""
        self._releases.setdefault(key, set()).add(member)
        if self._releaser is None or self._releaser.done():
            self._releaser = self._spawn(self._flush_releases())

    async def _flush_releases(self) -> None:
        while self._releases:
            batch, self._releases = self._releases, {}
            try:
                async with asyncio.timeout(5):
                    pipe = self.commands().pipeline(transaction=False)
                    for key, members in batch.items():
                        pipe.zrem(key, *members)
                    await pipe.execute()
            except (RedisError, OSError, TimeoutError) as exc:
                count = sum(len(m) for m in batch.values())
                logger.warning("could not release %d stream slots (they lapse by themselves): %r", count, exc)

    async def close(self) -> None:
        """Stop the tasks, close the connections (the database one on its own thread)."""
        if self._releases:
            await self._flush_releases()
        tasks = [t for t in (*self._tasks, self._waker) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # before their connections go
        self._tasks = []
        await self._reset_reader()
        if self._commands is not None:
            await self._commands.aclose()
            self._commands = None
        await asyncio.get_running_loop().run_in_executor(self._db, connections.close_all)
        self._db.shutdown(wait=False)

    async def read_after(self, *, job_id: str, after: str) -> list[dict]:
        """Everything in the log after `after` (a drain once the job is final), on the command pool."""
        entries: list[dict] = []
        while True:
            answer: Any = await self.commands().xread({output_key(job_id): after}, count=MAX_READ)
            if not answer:
                return entries
            [(_key, items)] = answer
            batch = [output_entry(entry_id, fields) for entry_id, fields in items]
            entries.extend(batch)
            after = batch[-1]["id"]


def _log_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("output hub task crashed", exc_info=task.exception())


_STATE_FIELDS = ("status", "attempts", "max_attempts", "progress", "result", "error_code", "error_message")


def _read_jobs(job_ids, known: dict) -> tuple[dict, dict]:
    """The signature of every record in `job_ids`, and the records whose signature is not the one `known`.

    Signatures (an md5 of the fields a stream shows) are computed by PostgreSQL: a poll of a thousand
    unchanged jobs builds no model instance and decodes no JSON here.
    """
    # Runs on a pool thread that outlives requests: let Django drop a connection that went bad or old.
    close_old_connections()
    connection = connections["default"]
    table = connection.ops.quote_name(JobRecord._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(name) for name in _STATE_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id::text, md5(ROW({columns})::text) FROM {table} WHERE id = ANY(%s::uuid[])", [list(job_ids)]
        )
        signatures = dict(cursor.fetchall())
    changed = [job_id for job_id, signature in signatures.items() if known.get(job_id) != signature]
    records = {}
    if changed:
        records = {str(job.pk): job for job in JobRecord.objects.filter(pk__in=changed).only(*_STATE_FIELDS)}
    return signatures, records


# --- one hub per event loop
_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def output_hub() -> OutputHub:
    """The hub of the running event loop (created on first use, never at import)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None or hub.redis_url != settings.REDIS_URL:
        hub = _hubs[loop] = OutputHub(settings.REDIS_URL)
    return hub


async def output_hub_close() -> None:
    """Close the running loop's hub, if it has one (the server's shutdown: pending slot releases go out)."""
    hub = _hubs.pop(asyncio.get_running_loop(), None)
    if hub is not None:
        await hub.close()


def output_hubs_drain() -> None:
    """Every hub of this process ends its streams. Safe from a signal handler: it only schedules."""
    for loop, hub in list(_hubs.items()):
        if not loop.is_closed():
            loop.call_soon_threadsafe(hub.drain)


# --- WSGI: the same streams, driven on one background loop
_background: dict[str, asyncio.AbstractEventLoop] = {}
_background_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    with _background_lock:
        loop = _background.get("loop")
        if loop is None or loop.is_closed():
            loop = _background["loop"] = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="slimy-output-hub", daemon=True).start()
        return loop


def iterate_sync(make_iterator) -> Iterator:
    """Run an async iterator (built by `make_iterator()` on the hub's loop) from synchronous code."""
    loop = _background_loop()

    async def build():
        return make_iterator()

    iterator: AsyncGenerator = asyncio.run_coroutine_threadsafe(build(), loop).result()
    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(iterator.__anext__(), loop).result()
            except StopAsyncIteration:
                return
    finally:
        asyncio.run_coroutine_threadsafe(iterator.aclose(), loop).result(10)


def output_hubs_close_background() -> None:
    """Close the background loop's hub (tests: no database session may outlive the test database)."""
    loop = _background.get("loop")
    hub = _hubs.get(loop) if loop is not None else None
    if loop is not None and hub is not None and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(hub.close(), loop).result(10)
        _hubs.pop(loop, None)
