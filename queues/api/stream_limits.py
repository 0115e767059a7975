"""Caps on open event streams: per user (across every web process) and per web process.

A stream takes a slot when it opens and gives it back when it ends, however it ends. The per-user
slots are members of one Redis sorted set per user, scored with the time they lapse on their own
(`JOB_EVENTS_MAX_SECONDS` + a margin), so a process that dies without giving its slots back blocks
nobody for long. Like the rate limiter, the per-user cap is not enforced while Redis is unreachable
(fail open); the per-process cap always is. Over either cap: 429 `too_many_streams`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from dataclasses import dataclass

from django.conf import settings
from redis.exceptions import RedisError

from queues.api.output_watch import output_hub
from queues.connections import connection_for
from queues.keys import STREAM_SLOTS_KEY
from queues.metrics import OPEN_STREAMS
from slimy_site.exceptions import RateLimited

logger = logging.getLogger(__name__)

REDIS_TIMEOUT = 0.5
LAPSE_MARGIN_SECONDS = 60

# KEYS[1]: the user's slots. ARGV: cap, slot id, lapse seconds. Returns 1 (taken) or 0 (full).
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3])) + 1)
return 1
"""


class TooManyStreams(RateLimited):
    code = "too_many_streams"
    message = "Too many open event streams; close one or try again later."


_lock = threading.Lock()
_open = {"count": 0}


@dataclass
class StreamSlot:
    user_id: int
    slot_id: str
    user_slot: bool  # False when Redis was unreachable (nothing to give back there)
    released: bool = False

    def _give_back(self) -> bool:
        with _lock:
            if self.released:
                return False
            self.released = True
            _open["count"] -= 1
        OPEN_STREAMS.dec()
        return self.user_slot

    def release(self) -> None:
        """Give the slot back (idempotent), from synchronous code."""
        if self._give_back():
            try:
                connection_for(settings.REDIS_URL, REDIS_TIMEOUT).zrem(
                    STREAM_SLOTS_KEY.format(self.user_id), self.slot_id
                )
            except RedisError as exc:
                logger.warning("could not release a stream slot (it lapses by itself): %s", exc)

    async def arelease(self) -> None:
        """Give the slot back (idempotent), from the event loop: batched on the stream hub's connections."""
        if self._give_back():
            output_hub().release_later(key=STREAM_SLOTS_KEY.format(self.user_id), member=self.slot_id)


def stream_slot_take(*, user, loop: asyncio.AbstractEventLoop | None = None) -> StreamSlot:
    """A slot for one stream of `user`, or TooManyStreams.

    With `loop` (the event loop that will serve the stream), the Redis call runs there on the stream
    hub's connections, so opening streams adds no connection of its own to the calling thread's pool.
    """
    with _lock:
        if _open["count"] >= settings.API_MAX_STREAMS_PER_PROCESS:
            raise TooManyStreams(
                details={"limit": settings.API_MAX_STREAMS_PER_PROCESS, "scope": "process"},
                headers={"Retry-After": "5"},
            )
        _open["count"] += 1
    slot_id = uuid.uuid4().hex
    args = (
        _TAKE,
        1,
        STREAM_SLOTS_KEY.format(user.pk),
        settings.API_MAX_STREAMS_PER_USER,
        slot_id,
        settings.JOB_EVENTS_MAX_SECONDS + LAPSE_MARGIN_SECONDS,
    )
    try:
        if loop is not None:
            taken = asyncio.run_coroutine_threadsafe(_take_on_hub(args), loop).result(REDIS_TIMEOUT * 4)
        else:
            taken = connection_for(settings.REDIS_URL, REDIS_TIMEOUT).eval(*args)
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("stream cap per user not enforced, Redis failed: %s", exc)
        taken, user_slot = 1, False
    else:
        user_slot = True
    if not taken:
        with _lock:
            _open["count"] -= 1
        raise TooManyStreams(
            details={"limit": settings.API_MAX_STREAMS_PER_USER, "scope": "user"}, headers={"Retry-After": "5"}
        )
    OPEN_STREAMS.inc()
    return StreamSlot(user_id=user.pk, slot_id=slot_id, user_slot=user_slot)


async def _take_on_hub(args) -> int:
    async with asyncio.timeout(REDIS_TIMEOUT * 3):
        return await output_hub().commands().eval(*args)


def stream_open_count() -> int:
    """Streams open in this process."""
    return _open["count"]
