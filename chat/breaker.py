"""A circuit breaker for the LLM provider, its state in Redis so every worker shares it.

closed    → calls go through; each transient provider failure increments a counter, a success resets it.
open      → after LLM_BREAKER_FAILURES consecutive failures: no calls for LLM_BREAKER_COOLDOWN seconds
            (the `open` key's TTL), replies are the fallback.
half-open → the cool-down ended but the failure count still stands: one caller at a time (a probe
            lock) may try; success closes the breaker, failure opens it again for a new cool-down.

Only transient failures count (timeouts, 429, 5xx): a 4xx is about one request, not the provider.
"""

from __future__ import annotations

from django.conf import settings

from chat.metrics import LLM_BREAKER_OPEN
from queues.connections import get_async_connection, get_connection

FAILURES_KEY = "slimy:llm:breaker:failures"
OPEN_KEY = "slimy:llm:breaker:open"
PROBE_KEY = "slimy:llm:breaker:probe"

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# Increment the failure count; open the breaker (and free the probe) when it reaches the threshold.
_RECORD_FAILURE = """
local failures = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if failures >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], failures, 'PX', ARGV[2])
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
"""


def _threshold() -> int:
    return max(settings.LLM_BREAKER_FAILURES, 1)


def _cooldown_ms() -> int:
    return max(int(settings.LLM_BREAKER_COOLDOWN * 1000), 1)


def breaker_state() -> str:
    conn = get_connection()
    pipe = conn.pipeline(transaction=False)
    pipe.exists(OPEN_KEY)
    pipe.get(FAILURES_KEY)
    return _state(*pipe.execute())


def _state(is_open, failures) -> str:
    if is_open:
        return OPEN
    if failures is not None and int(failures) >= _threshold():
        return HALF_OPEN
    return CLOSED


def breaker_allow() -> bool:
    """Whether a provider call may be made now (takes the probe lock when half-open)."""
    state = breaker_state()
    if state == OPEN:
        LLM_BREAKER_OPEN.set(1)
        return False
    if state == HALF_OPEN:
        return bool(get_connection().set(PROBE_KEY, "1", nx=True, px=_probe_ttl_ms()))
    return True


def _probe_ttl_ms() -> int:
    # The probe lock expires on its own if its holder dies mid-call.
    return int(max(settings.OPENAI_STREAM_MAX_SECONDS, settings.OPENAI_TIMEOUT) * 1000) + 1000


def breaker_record_success() -> None:
    get_connection().delete(FAILURES_KEY, OPEN_KEY, PROBE_KEY)
    LLM_BREAKER_OPEN.set(0)


def breaker_record_failure() -> bool:
    """Count one transient provider failure; True when this failure opened the breaker."""
    return _opened(get_connection().eval(_RECORD_FAILURE, 3, *_failure_args()))


def _failure_args() -> tuple:
    # Failures older than ten cool-downs (at least 10 minutes) are forgotten.
    memory = max(int(settings.LLM_BREAKER_COOLDOWN * 10), 600)
    return FAILURES_KEY, OPEN_KEY, PROBE_KEY, _threshold(), _cooldown_ms(), memory


def _opened(answer) -> bool:
    if answer:
        LLM_BREAKER_OPEN.set(1)
    return bool(answer)


def breaker_release_probe() -> None:
    """A probe that ended without a verdict on the provider (a 4xx, a cancellation) frees the lock."""
    get_connection().delete(PROBE_KEY)


def breaker_reset() -> None:
    breaker_record_success()


# The same, for a coroutine (the chat reply on the worker's event loop): `redis.asyncio`, so a reply never
# blocks the loop, and with it every other reply in flight, on a Redis round trip.


async def abreaker_allow(*, conn=None) -> bool:
    conn = conn or get_async_connection()
    state = _state(*await conn.pipeline(transaction=False).exists(OPEN_KEY).get(FAILURES_KEY).execute())
    if state == OPEN:
        LLM_BREAKER_OPEN.set(1)
        return False
    if state == HALF_OPEN:
        return bool(await conn.set(PROBE_KEY, "1", nx=True, px=_probe_ttl_ms()))
    return True


async def abreaker_record_success(*, conn=None) -> None:
    await (conn or get_async_connection()).delete(FAILURES_KEY, OPEN_KEY, PROBE_KEY)
    LLM_BREAKER_OPEN.set(0)


async def abreaker_record_failure(*, conn=None) -> bool:
    return _opened(await (conn or get_async_connection()).eval(_RECORD_FAILURE, 3, *_failure_args()))


async def abreaker_release_probe(*, conn=None) -> None:
    await (conn or get_async_connection()).delete(PROBE_KEY)
