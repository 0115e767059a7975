"""A job's output log: text a running job produces, readable from any web process while it runs.

One Redis stream per job (`slimy:job:<id>:output`, written with XADD, read with XREAD). Entries are
`segment` markers — each attempt starts a new segment, and a job may open a labelled one (a
fallback, say) — and `chunk`s of text. Stream ids are the cursors clients resume from. The log
outlives retries and expires with the job's result (its TTL is renewed at every segment and set to
the result TTL when the job closes it).

It knows nothing about what a job writes, and it does not record job states: those are the
ledger's (PostgreSQL); the event stream (queues.api.output) merges the two.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from typing import Any

from django.conf import settings

from queues.connections import get_async_connection, get_connection
from queues.definitions import registry
from queues.keys import OUTPUT_FENCE_KEY, OUTPUT_KEY
from slimy_site.exceptions import ValidationFailed

# Bound the memory one runaway job can take; older entries are trimmed (approximately).
MAX_ENTRIES = 50_000
MAX_READ = 1_000
_CURSOR = re.compile(r"^(0|\d{1,20}(-\d{1,20})?)$")

SEGMENT, CHUNK = "segment", "chunk"
logger = logging.getLogger(__name__)


def output_key(job_id) -> str:
    return OUTPUT_KEY.format(job_id)


class InvalidCursor(ValidationFailed):
    code = "invalid_cursor"
    message = "The cursor is not valid."


def parse_cursor(value: str | None) -> str:
    """A stream id from a client (`?after=` or `Last-Event-ID`); empty means from the beginning."""
    value = (value or "").strip()
    if not value:
        return "0"
    # Stream ids are two unsigned 64-bit numbers; Redis refuses anything larger.
    if not _CURSOR.match(value) or any(int(part) >= 2**64 for part in value.split("-")):
        raise InvalidCursor(details={"after": ["Must be a cursor returned by this API, e.g. 1712345678901-0."]})
    return value


# Only the current attempt writes. OUTPUT_FENCE_KEY holds the newest attempt that opened the log: opening a
# segment raises it to the writer's attempt (refused if a newer attempt already holds it), and the
# recovery of an abandoned attempt raises it past that attempt. A chunk carrying another attempt number
# than the fence is refused (the script returns 0). No key: no fence (nothing newer ever wrote).
_APPEND = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local attempt = tonumber(ARGV[1])
if ARGV[3] ~= '0' then
  if current > attempt then return 0 end
  redis.call('SET', KEYS[2], attempt, 'EX', ARGV[3])
elseif current ~= 0 and current ~= attempt then
  return 0
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
if ARGV[3] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return id
"""
_CLOSE_FENCE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local past = tonumber(ARGV[1]) + 1
if current < past then redis.call('SET', KEYS[1], past, 'EX', ARGV[2]) end
return past
"""
# Async writers coalesce text: at most one XADD per FLUSH_SECONDS per job (plus one at a segment and the close).
FLUSH_SECONDS = 0.05


def fence_key(job_id) -> str:
    return OUTPUT_FENCE_KEY.format(job_id)


def output_fence_close(*, job_id, attempt: int, ttl: int = 86400) -> None:
    """Refuse every further write of `attempt` (it was handed to its retry policy, or superseded)."""
    conn = get_connection()
    conn.register_script(_CLOSE_FENCE)(keys=[fence_key(job_id)], args=[attempt, ttl])


class OutputRefused(Exception):
    """The fence refused a write: this attempt is no longer the job's current one."""


class _Buffered:
    """What both writers share: the fields of entries and the text not yet flushed."""

    def __init__(self, *, job_id: str, attempt: int, running_ttl: int, result_ttl: int):
        self.job_id = str(job_id)
        self.key = output_key(job_id)
        self.keys = [self.key, fence_key(job_id)]
        self.attempt = attempt
        self.running_ttl = running_ttl
        self.result_ttl = result_ttl
        self.written = 0
        self.refused = False
        self._buffer: list[str] = []
        self._last_flush = 0.0

    def _segment_args(self, label: str) -> list:
        return [self.attempt, MAX_ENTRIES, self.running_ttl, "type", SEGMENT, "attempt", self.attempt, "label", label]

    def _chunk_args(self, text: str) -> list:
        return [self.attempt, MAX_ENTRIES, 0, "type", CHUNK, "attempt", self.attempt, "text", text]

    def _take(self) -> str:
        text = "".join(self._buffer)
        self._buffer.clear()
        return text

    def _accepted(self, answer) -> str:
        if answer == 0 or answer is None:
            self.refused = True
            raise OutputRefused(self.job_id)
        return answer.decode() if isinstance(answer, bytes) else answer


class OutputWriter(_Buffered):
    """Appends one job's output from synchronous code, one entry per write: a synchronous job has no
    event loop to send a held buffer later, so text is never left waiting for a next write. (The chat
    reply streams through AsyncOutputWriter, which coalesces tokens.)"""

    def _script(self):
        return get_connection().register_script(_APPEND)

    def start_segment(self, label: str = "attempt") -> str:
        """Mark where a new part begins (every attempt starts with one)."""
        self.flush()
        return self._accepted(self._script()(keys=self.keys, args=self._segment_args(label)))

    def write(self, text: str) -> None:
        if not text:
            return
        self._buffer.append(text)
        self.written += len(text)
        self.flush()

    def flush(self) -> None:
        text = self._take()
        self._last_flush = time.monotonic()
        if text:
            self._accepted(self._script()(keys=self.keys, args=self._chunk_args(text)))

    def close(self) -> None:
        """The job is done with its output: flush it and keep it as long as its result."""
        try:
            self.flush()
        finally:
            get_connection().expire(self.key, self.result_ttl)


class _LoopFlusher:
    """One per event loop: the output of all its writers goes to Redis in ONE pipeline per round.

    Text buffered by writers is sent every FLUSH_SECONDS; segment starts and closes wait for the next
    round (a few milliseconds). A thousand replies streaming at once then cost a few round trips a second,
    not several per reply, through at most ASYNC_MAX_CONNECTIONS connections (queues.connections).
    """

    OPS_DELAY = 0.005  # how long a segment start or a close waits for others to share its round trip

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.dirty: dict[AsyncOutputWriter, None] = {}  # an ordered set
        self.ops: list[tuple] = []  # (writer, kind, args, future), in order
        self.task: asyncio.Task | None = None
        self.wake: asyncio.Event = asyncio.Event()

    def _ensure_running(self) -> None:
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run())

    def mark(self, writer: AsyncOutputWriter) -> None:
        self.dirty[writer] = None
        self._ensure_running()

    def submit(self, writer: AsyncOutputWriter, kind: str, args: list | None = None) -> asyncio.Future:
        """Queue a segment start ("script") or an expiry ("expire") after the writer's pending text."""
        self.dirty.pop(writer, None)
        text = writer._take()
        if text:
            self.ops.append((writer, "script", writer._chunk_args(text), None))
        future = self.loop.create_future()
        self.ops.append((writer, kind, args, future))
        self._ensure_running()
        self.wake.set()
        return future

    async def _run(self) -> None:
        while self.dirty or self.ops:
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), FLUSH_SECONDS)
            except TimeoutError:
                pass
            if self.ops:
                await asyncio.sleep(self.OPS_DELAY)
            ops, self.ops = self.ops, []
            for writer in list(self.dirty):
                text = writer._take()
                if text:
                    ops.append((writer, "script", writer._chunk_args(text), None))
            self.dirty = {}
            try:
                await self._write(ops)
            except Exception as exc:  # noqa: BLE001 - a lost round must not end the loop's flusher
                logger.warning("output flush of %s entries failed: %s", len(ops), exc)
                for *_, future in ops:
                    if future is not None and not future.done():
                        future.set_exception(exc)

    @staticmethod
    async def _write(ops: list[tuple]) -> None:
        ops = [op for op in ops if not (op[0].refused and op[3] is None)]
        if not ops:
            return
        conn = get_async_connection()
        script = conn.register_script(_APPEND)
        async with conn.pipeline(transaction=False) as pipe:
            for writer, kind, args, _ in ops:
                if kind == "expire":
                    pipe.expire(writer.key, writer.result_ttl)
                else:
                    await script(keys=writer.keys, args=args, client=pipe)  # queued, not sent
            answers = await pipe.execute(raise_on_error=False)
        for (writer, kind, _, future), answer in zip(ops, answers):
            if kind == "script" and not isinstance(answer, Exception) and not answer:
                writer.refused = True  # the next write raises OutputRefused in the job itself
            if future is not None and not future.done():
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopFlusher] = weakref.WeakKeyDictionary()


def _flusher() -> _LoopFlusher:
    loop = asyncio.get_running_loop()
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = _LoopFlusher(loop)
    return flusher


class AsyncOutputWriter(_Buffered):
    """The same log from a coroutine (`redis.asyncio`), written by the loop's flusher together with every
    other reply's: text at most once per FLUSH_SECONDS, a segment or the close within a few milliseconds."""

    async def start_segment(self, label: str = "attempt") -> str:
        if self.refused:
            raise OutputRefused(self.job_id)
        return self._accepted(await _flusher().submit(self, "script", self._segment_args(label)))

    def write(self, text: str) -> None:
        """Buffer text; it reaches Redis within about FLUSH_SECONDS (raises OutputRefused once fenced off)."""
        if self.refused:
            raise OutputRefused(self.job_id)
        if not text:
            return
        if not self._buffer:
            _flusher().mark(self)
        self._buffer.append(text)
        self.written += len(text)

    async def close(self) -> None:
        """Flush what is left and keep the log as long as the job's result (raises OutputRefused if fenced)."""
        await _flusher().submit(self, "expire")
        if self.refused:
            raise OutputRefused(self.job_id)


def _writer_ttls(job_type: str) -> dict:
    definition = registry.get(job_type)
    result_ttl = (definition.result_ttl if definition else None) or settings.JOB_RESULT_TTL
    timeout = definition.timeout if definition else 600
    backoff = definition.retry.backoff_max if definition else 300
    # While the job may still run or wait for a retry, outlive both.
    return {"running_ttl": int(result_ttl + timeout + backoff), "result_ttl": int(result_ttl)}


def output_writer_open(*, job_id: str, job_type: str, attempt: int) -> OutputWriter:
    """A writer for this attempt, its first segment already started."""
    writer = OutputWriter(job_id=job_id, attempt=attempt, **_writer_ttls(job_type))
    writer.start_segment()
    return writer


async def output_writer_aopen(*, job_id: str, job_type: str, attempt: int) -> AsyncOutputWriter:
    """As output_writer_open, for a coroutine."""
    writer = AsyncOutputWriter(job_id=job_id, attempt=attempt, **_writer_ttls(job_type))
    await writer.start_segment()
    return writer


def output_entry(entry_id, fields: dict) -> dict:
    data = {k.decode(): v.decode() for k, v in fields.items()}
    entry = {
        "id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        "type": data.get("type", CHUNK),
        "attempt": int(data.get("attempt") or 0),
    }
    if entry["type"] == SEGMENT:
        entry["label"] = data.get("label", "attempt")
    else:
        entry["text"] = data.get("text", "")
    return entry


def output_read(*, job_id, after: str = "0", limit: int = MAX_READ, block_ms: int | None = None) -> list[dict]:
    """Entries after the cursor (oldest first); with `block_ms`, wait up to that long for the first one."""
    limit = max(1, min(limit, MAX_READ))
    # redis-py types the reply as a union of its RESP2 and RESP3 shapes; this is RESP2's list.
    answer: Any = get_connection().xread({output_key(job_id): after}, count=limit, block=block_ms)
    if not answer:
        return []
    [(_key, items)] = answer  # one stream asked, one [key, entries] pair answered
    return [output_entry(entry_id, fields) for entry_id, fields in items]


def output_text(*, job_id) -> str:
    """The text of the latest segment (what the job's last attempt, or its fallback, wrote)."""
    text: list[str] = []
    for entry in output_read_all(job_id=job_id):
        if entry["type"] == SEGMENT:
            text = []
        else:
            text.append(entry["text"])
    return "".join(text)


def output_read_all(*, job_id) -> list[dict]:
    entries: list[dict] = []
    cursor = "0"
    while True:
        batch = output_read(job_id=job_id, after=cursor)
        if not batch:
            return entries
        entries.extend(batch)
        cursor = batch[-1]["id"]


def output_exists(*, job_id) -> bool:
    return bool(get_connection().exists(output_key(job_id)))
