"""The LLM provider's budgets (OPENAI_RPM requests and OPENAI_TPM tokens per minute), shared by every
worker process through Redis.

Each budget is a GCRA limiter (one "theoretical arrival time" per budget, moved by one Lua script, on
Redis' clock): a request is admitted when both budgets have room, and then charged one request and its
*estimated* tokens. After the call, budget_settle() corrects the token charge with the real usage, and
budget_observe() lets the provider's `x-ratelimit-*` headers tighten the budget (a lower limit than
configured; nothing remaining holds callers for a call's share of the limit). Admission never bursts: requests are spaced evenly, a
little wider than the limit (SAFETY), so a provider counting over any sliding minute never sees more.

budget_acquire() does not sleep: it returns 0.0 when the call may go now (and charged it) or the
seconds to wait (nothing charged). budget_wait() loops on it, reporting each wait, so a job waits for
the budget without failing and without spending an attempt. Both budgets 0 (the default) = no limit,
no Redis round trip. Left out: per-model budgets (one provider budget for every model).
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from dataclasses import dataclass

from django.conf import settings

from queues.connections import registered_script

PREFIX = "slimy:budget:"
SAFETY = 0.02  # spacing 2 % wider than the limit: clock and network jitter never add up to a 429
OBSERVED_TTL = 600  # seconds a limit learnt from the provider's headers stays in force


def _keys(name: str) -> list[str]:
    return [f"{PREFIX}{name}:requests", f"{PREFIX}{name}:tokens", f"{PREFIX}{name}:observed"]


# KEYS: request TAT, token TAT, observed limits.  ARGV: requests/min, tokens/min, tokens, safety.
# Returns the wait in seconds as a string ("0" = admitted and charged).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
local seen_rpm = tonumber(redis.call('HGET', KEYS[3], 'requests') or '0')
local seen_tpm = tonumber(redis.call('HGET', KEYS[3], 'tokens') or '0')
if seen_rpm > 0 and (rpm == 0 or seen_rpm < rpm) then rpm = seen_rpm end
if seen_tpm > 0 and (tpm == 0 or seen_tpm < tpm) then tpm = seen_tpm end
local tokens, k = tonumber(ARGV[3]), 1 + tonumber(ARGV[4])
local r_tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local t_tat = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
local wait = 0
if rpm > 0 then wait = math.max(wait, r_tat - now) end
if tpm > 0 then wait = math.max(wait, t_tat - now) end
if wait > 0 then return tostring(wait) end
if rpm > 0 then
  local next_tat = r_tat + 60 * k / rpm
  redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil((next_tat - now + 60) * 1000))
end
if tpm > 0 and tokens > 0 then
  local next_tat = t_tat + 60 * k * tokens / tpm
  redis.call('SET', KEYS[2], tostring(next_tat), 'PX', math.ceil((next_tat - now + 60) * 1000))
end
return '0'
"""

# KEYS: token TAT.  ARGV: token difference (real - estimated), tokens/min, safety.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local tpm = tonumber(ARGV[2])
if tpm <= 0 then return '0' end
-- a refund never reaches below now: unused budget does not pile up into a burst
local next_tat = math.max(tat + 60 * (1 + tonumber(ARGV[3])) * tonumber(ARGV[1]) / tpm, now)
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil((next_tat - now + 60) * 1000))
return tostring(next_tat - now)
"""

# KEYS: request TAT, token TAT, observed.  ARGV: limit, remaining, reset (s) for requests then tokens
# ("" where the header was absent), observed TTL, configured rpm, configured tpm, tokens of a typical call,
# safety.  Only ever delays (never frees budget).
_OBSERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local k = 1 + tonumber(ARGV[11])
local function tighten(tat_key, field, limit, remaining, reset, configured, cost)
  if limit ~= '' then
    redis.call('HSET', KEYS[3], field, limit)
    redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]))
  end
  if remaining == '' or reset == '' or tonumber(remaining) > 0 then return end
  -- Nothing left: hold for one call's share of the limit (the provider refills continuously), or for
  -- the whole reset when no limit is known.
  local effective = tonumber(configured)
  local seen = tonumber(redis.call('HGET', KEYS[3], field) or '0')
  if seen > 0 and (effective == 0 or seen < effective) then effective = seen end
  local hold = tonumber(reset)
  if effective > 0 then hold = math.min(hold, 60 * k * cost / effective) end
  local until_ = now + hold
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  if until_ > tat then
    redis.call('SET', tat_key, tostring(until_), 'PX', math.ceil((until_ - now + 60) * 1000))
  end
end
tighten(KEYS[1], 'requests', ARGV[1], ARGV[2], ARGV[3], ARGV[8], 1)
tighten(KEYS[2], 'tokens', ARGV[4], ARGV[5], ARGV[6], ARGV[9], tonumber(ARGV[10]))
return 1
"""

# KEYS: request TAT, token TAT.  ARGV: seconds.  A 429 got through anyway: nobody sends before it passes.
_BACKOFF = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local until_ = now + tonumber(ARGV[1])
for i = 1, 2 do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if until_ > tat then
    redis.call('SET', KEYS[i], tostring(until_), 'PX', math.ceil((until_ - now + 60) * 1000))
  end
end
return 1
"""

_SOURCES = {"acquire": _ACQUIRE, "settle": _SETTLE, "observe": _OBSERVE, "backoff": _BACKOFF}
_async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _script(conn, name: str):
    return registered_script(conn, _SOURCES[name])


def _sync_conn(conn):
    if conn is not None:
        return conn
    from queues.connections import get_connection

    return get_connection()


def _async_conn(conn):
    """The given asyncio client, else one per event loop (an asyncio client belongs to its loop)."""
    if conn is not None:
        return conn
    import redis.asyncio as aioredis

    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = aioredis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=settings.REDIS_SOCKET_TIMEOUT, socket_connect_timeout=2.0
        )
    return client


def _limits(rpm, tpm) -> tuple[int, int]:
    return (settings.OPENAI_RPM if rpm is None else rpm), (settings.OPENAI_TPM if tpm is None else tpm)


def budget_tokens_estimate(*, prompt_chars: int, max_tokens: int | None = None) -> int:
    """Tokens a call may use, charged up front: ~4 characters a token for the prompt, plus the reply's cap."""
    return max(prompt_chars, 0) // 4 + 1 + (settings.OPENAI_MAX_TOKENS if max_tokens is None else max_tokens)


# --- sync


def budget_acquire_sync(
    *, tokens: int, name: str = "openai", rpm: int | None = None, tpm: int | None = None, conn=None
) -> float:
    """0.0 when the call may go now (one request and `tokens` charged), else seconds to wait (nothing
    charged). `rpm`/`tpm` default to OPENAI_RPM/OPENAI_TPM; 0 = no such budget."""
    rpm, tpm = _limits(rpm, tpm)
    if rpm <= 0 and tpm <= 0:
        return 0.0
    conn = _sync_conn(conn)
    return float(_script(conn, "acquire")(keys=_keys(name), args=[rpm, tpm, int(tokens), SAFETY]))


def budget_wait_sync(
    *,
    tokens: int,
    on_wait=None,
    max_wait: float = 300.0,
    name: str = "openai",
    rpm: int | None = None,
    tpm: int | None = None,
    conn=None,
    sleep=time.sleep,
) -> float:
    """Block until the budget admits the call (and charged it); returns the seconds waited.

    `on_wait(seconds)` is called before each sleep (the job shows it in its progress). Raises
    BudgetWaitTooLong past `max_wait` seconds (the caller's timeout should fire first)."""
    waited = 0.0
    while (wait := budget_acquire_sync(tokens=tokens, name=name, rpm=rpm, tpm=tpm, conn=conn)) > 0:
        if waited + wait > max_wait:
            raise BudgetWaitTooLong(waited + wait)
        if on_wait is not None:
            on_wait(wait)
        sleep(wait)
        waited += wait
    return waited


def budget_settle_sync(*, estimated: int, actual: int, name: str = "openai", tpm: int | None = None, conn=None) -> None:
    """Correct the token charge of a finished call with its real usage (refunds or charges the difference)."""
    _, tpm = _limits(None, tpm)
    if tpm <= 0 or actual == estimated:
        return
    _script(_sync_conn(conn), "settle")(keys=_keys(name)[1:2], args=[int(actual) - int(estimated), tpm, SAFETY])


def budget_observe_sync(
    *, headers, name: str = "openai", rpm: int | None = None, tpm: int | None = None, conn=None
) -> bool:
    """Tighten the budget from a response's `x-ratelimit-*` headers; False when there were none.

    A limit lower than ours is used for OBSERVED_TTL seconds. Nothing remaining holds every caller for
    one call's share of the limit (a typical call = OPENAI_MAX_TOKENS tokens), or until the reset when
    no limit is known."""
    args = ratelimit_header_args(headers)
    if args is None:
        return False
    _script(_sync_conn(conn), "observe")(keys=_keys(name), args=_observe_args(args, rpm, tpm))
    return True


def _observe_args(header_args, rpm, tpm) -> list:
    rpm, tpm = _limits(rpm, tpm)
    return [*header_args, OBSERVED_TTL, rpm, tpm, settings.OPENAI_MAX_TOKENS, SAFETY]


def budget_backoff_sync(*, seconds: float, name: str = "openai", conn=None) -> None:
    """The provider answered 429 anyway: hold every worker's next call for `seconds` (its Retry-After)."""
    _script(_sync_conn(conn), "backoff")(keys=_keys(name)[:2], args=[max(float(seconds), 0.0)])


# --- asyncio (the async reply job): same scripts, same keys


async def budget_acquire(
    *, tokens: int, name: str = "openai", rpm: int | None = None, tpm: int | None = None, conn=None
) -> float:
    rpm, tpm = _limits(rpm, tpm)
    if rpm <= 0 and tpm <= 0:
        return 0.0
    conn = _async_conn(conn)
    return float(await _script(conn, "acquire")(keys=_keys(name), args=[rpm, tpm, int(tokens), SAFETY]))


async def budget_wait(
    *,
    tokens: int,
    on_wait=None,
    max_wait: float = 300.0,
    name: str = "openai",
    rpm: int | None = None,
    tpm: int | None = None,
    conn=None,
) -> float:
    """Await the budget (see budget_wait_sync); `on_wait(seconds)` may be a plain function or a coroutine."""
    waited = 0.0
    while (wait := await budget_acquire(tokens=tokens, name=name, rpm=rpm, tpm=tpm, conn=conn)) > 0:
        if waited + wait > max_wait:
            raise BudgetWaitTooLong(waited + wait)
        if on_wait is not None:
            result = on_wait(wait)
            if asyncio.iscoroutine(result):
                await result
        await asyncio.sleep(wait)
        waited += wait
    return waited


async def budget_settle(
    *, estimated: int, actual: int, name: str = "openai", tpm: int | None = None, conn=None
) -> None:
    _, tpm = _limits(None, tpm)
    if tpm <= 0 or actual == estimated:
        return
    await _script(_async_conn(conn), "settle")(keys=_keys(name)[1:2], args=[int(actual) - int(estimated), tpm, SAFETY])


async def budget_observe(
    *, headers, name: str = "openai", rpm: int | None = None, tpm: int | None = None, conn=None
) -> bool:
    args = ratelimit_header_args(headers)
    if args is None:
        return False
    await _script(_async_conn(conn), "observe")(keys=_keys(name), args=_observe_args(args, rpm, tpm))
    return True


async def budget_backoff(*, seconds: float, name: str = "openai", conn=None) -> None:
    await _script(_async_conn(conn), "backoff")(keys=_keys(name)[:2], args=[max(float(seconds), 0.0)])


class BudgetWaitTooLong(Exception):
    def __init__(self, seconds: float):
        super().__init__(f"the provider budget would need a wait of {seconds:.1f}s")
        self.seconds = seconds


# --- the provider's rate-limit headers


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s") or plain seconds ("2.5"), in seconds."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _int(value) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class RateLimitHeaders:
    limit_requests: int | None
    remaining_requests: int | None
    reset_requests: float | None
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens: float | None


def ratelimit_headers(headers) -> RateLimitHeaders | None:
    """The `x-ratelimit-*` values of a response (any mapping with case-insensitive or lower-case names)."""

    def get(name):
        value = headers.get(name)
        return value if value is not None else headers.get(name.title())

    parsed = RateLimitHeaders(
        limit_requests=_int(get("x-ratelimit-limit-requests")),
        remaining_requests=_int(get("x-ratelimit-remaining-requests")),
        reset_requests=parse_reset(get("x-ratelimit-reset-requests")),
        limit_tokens=_int(get("x-ratelimit-limit-tokens")),
        remaining_tokens=_int(get("x-ratelimit-remaining-tokens")),
        reset_tokens=parse_reset(get("x-ratelimit-reset-tokens")),
    )
    return None if all(v is None for v in vars(parsed).values()) else parsed


def ratelimit_header_args(headers) -> list[str] | None:
    parsed = ratelimit_headers(headers)
    if parsed is None:
        return None

    def s(value):
        return "" if value is None or (isinstance(value, int) and value < 0) else str(value)

    limit_requests = parsed.limit_requests if parsed.limit_requests and parsed.limit_requests > 0 else None
    limit_tokens = parsed.limit_tokens if parsed.limit_tokens and parsed.limit_tokens > 0 else None
    return [
        s(limit_requests),
        s(parsed.remaining_requests),
        s(parsed.reset_requests),
        s(limit_tokens),
        s(parsed.remaining_tokens),
        s(parsed.reset_tokens),
    ]
