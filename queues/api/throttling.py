"""Rate limits per user and endpoint class, kept in Redis so every web process shares them.

`settings.API_RATE_LIMITS` maps a scope to a rate (`"120/min"`); `"<scope>@<role>"` overrides it for a
role (e.g. `submit@service`). Scopes: a view's `throttle_scope`, else `read` for safe methods and
`write` for the rest; `accept_job` also charges `submit` for every job a request creates.

Each (scope, user) pair is a GCRA bucket in one Redis key, updated by a Lua script (atomic, using
Redis' clock, so web processes on several machines agree). Over the limit: 429 `rate_limited` with
Retry-After. If Redis is unreachable the limit is not enforced (fail open): reads must keep working
while Redis is down, and submissions are refused by `accept_job` anyway.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from dataclasses import dataclass

from django.conf import settings
from redis import Redis
from redis.exceptions import RedisError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.throttling import BaseThrottle

from queues.connections import connection_for
from queues.keys import RATELIMIT_PREFIX
from slimy_site.exceptions import RateLimited
from slimy_site.roles import Role, user_roles

logger = logging.getLogger(__name__)

# A rate-limit check must never make a request wait on a sick Redis.
REDIS_TIMEOUT = 0.5
_PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")
_ROLE_ORDER = (Role.STAFF, Role.SERVICE, Role.CLUB, Role.MEMBER)

# GCRA: KEYS[1] holds the theoretical arrival time (ms). ARGV: limit, period (ms).
# Returns {allowed (1/0), ms to wait, remaining}.
# The GCRA as Lua functions, for this module's script and for scripts that charge several scopes at once
# (the submission guard's). gcra() charges `key` when allowed; returns allowed (1/0), the ms to wait,
# and the requests left.
GCRA_LUA = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local function gcra(key, limit, period, now)
  local interval = period / limit
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - period
  if allow_at > now then
    return 0, math.ceil(allow_at - now), 0
  end
  redis.call('SET', key, string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
  return 1, 0, math.floor((now - allow_at) / interval)
end
"""
_GCRA = (
    GCRA_LUA
    + """
local allowed, wait, left = gcra(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now_ms())
return {allowed, wait, left}
"""
)


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int  # seconds

    def __str__(self):
        return f"{self.limit}/{self.period}s"


@functools.lru_cache(maxsize=256)
def parse_rate(text: str | None) -> Rate | None:
    """`"30/min"`, `"5/10s"`, `"1000/hour"`; `None`, `""` or `"none"` means unlimited."""
    if text is None or str(text).strip().lower() in ("", "none", "off"):
        return None
    match = _RATE.match(str(text).lower())
    if not match or match.group(3) not in _PERIODS or int(match.group(1)) < 1:
        raise ValueError(f"Invalid rate {text!r}; expected e.g. '30/min', '5/10s', '1000/hour'.")
    count, multiplier, unit = match.groups()
    return Rate(limit=int(count), period=int(multiplier or 1) * _PERIODS[unit])


def rate_for(*, scope: str, user) -> Rate | None:
    rates = settings.API_RATE_LIMITS
    held = user_roles(user)
    for role in _ROLE_ORDER:
        if role in held and f"{scope}@{role}" in rates:
            return parse_rate(rates[f"{scope}@{role}"])
    return parse_rate(rates.get(scope))


def rate_limit_connection() -> Redis:
    """The short-timeout client rate limits (and the submission guard) use; pings and stream slots share
    it, and in a web process its connections are bounded with the others (connections_bound)."""
    return connection_for(settings.REDIS_URL, REDIS_TIMEOUT)


def rate_limit_hit(*, scope: str, ident: str, rate: Rate) -> float:
    """Count one request; 0 when allowed, else the seconds to wait. Raises RedisError when Redis fails."""
    conn = rate_limit_connection()
    reply = conn.register_script(_GCRA)(
        keys=[f"{RATELIMIT_PREFIX}:{scope}:{ident}"], args=[rate.limit, rate.period * 1000]
    )
    return rate_limit_wait(reply)


def rate_limit_wait(reply) -> float:
    """The seconds to wait from the script's reply (0 when allowed)."""
    allowed, wait_ms, _remaining = reply
    return 0.0 if allowed else max(int(wait_ms) / 1000.0, 0.001)


def rate_limit_queue(pipe, request, *, scope: str) -> bool:
    """Add this request's charge for `scope` to a Redis pipeline (folded with other commands into one
    round trip); False when nothing was added (no limit, or already charged). Read the reply with
    `rate_limit_wait` and raise with `rate_limited`."""
    if not _first_charge(request, scope):
        return False
    rate = rate_for(scope=scope, user=getattr(request, "user", None))
    if rate is None:
        return False
    # EVAL, not EVALSHA: a pipeline would first ask SCRIPT EXISTS, a round trip of its own.
    pipe.eval(_GCRA, 1, f"{RATELIMIT_PREFIX}:{scope}:{request_ident(request)}", rate.limit, rate.period * 1000)
    return True


def rate_limit_charges(request, *, scopes) -> list[tuple[str, str, int, int]]:
    """This request's charges for `scopes` not made yet, as (scope, key, limit, period in ms): for a caller
    that runs the GCRA of several scopes in a script of its own (the submission guard's). Each scope is
    then counted as charged, as rate_limit_queue counts it."""
    charges = []
    for scope in scopes:
        if not _first_charge(request, scope):
            continue
        rate = rate_for(scope=scope, user=getattr(request, "user", None))
        if rate is not None:
            key = f"{RATELIMIT_PREFIX}:{scope}:{request_ident(request)}"
            charges.append((scope, key, rate.limit, rate.period * 1000))
    return charges


def _first_charge(request, scope: str) -> bool:
    charged = getattr(request, "_slimy_rate_scopes", None)
    if charged is None:
        charged = set()
        request._slimy_rate_scopes = charged
    if scope in charged:
        return False
    charged.add(scope)
    return True


def request_ident(request) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{request.META.get('REMOTE_ADDR', '')}"


def rate_limit_check(request, *, scope: str) -> float:
    """Charge `scope` for this request; the seconds to wait when over the limit, else 0.

    A request is charged once per scope (a view throttled as `submit` that calls accept_job pays once).
    """
    if not _first_charge(request, scope):
        return 0.0
    rate = rate_for(scope=scope, user=getattr(request, "user", None))
    if rate is None:
        return 0.0
    try:
        return rate_limit_hit(scope=scope, ident=request_ident(request), rate=rate)
    except (RedisError, OSError):
        logger.warning("rate limit %s not enforced: Redis unavailable", scope)
        return 0.0


def rate_limit_enforce(request, *, scope: str) -> None:
    """Raise 429 `rate_limited` (with Retry-After) when `scope` is exhausted for this caller."""
    wait = rate_limit_check(request, scope=scope)
    if wait:
        raise rate_limited(scope=scope, wait=wait)


def rate_limited(*, scope: str, wait: float) -> RateLimited:
    seconds = max(1, math.ceil(wait))
    return RateLimited(
        f"Too many requests; retry in {seconds} seconds.",
        details={"scope": scope, "retryAfter": seconds},
        headers={"Retry-After": str(seconds)},
    )


def rate_limit_defer(request, *, scope: str) -> None:
    """Leave `scope`'s charge to the submission guard's one round trip (`rate_limit_take_deferred`).

    If the view answers without reaching it (a 400, a 404), the API's exception handler settles the
    charge then (`request.settle_deferred_rate_limits()`), and a caller over the limit gets the 429 it
    would have got before the view ran; nothing was created either way.
    """
    deferred = getattr(request, "_slimy_deferred_scopes", None)
    if deferred is None:
        deferred = request._slimy_deferred_scopes = []
        # A callback, so that slimy_site.exceptions settles it without importing this module.
        request.settle_deferred_rate_limits = lambda: _settle_deferred(request)
    deferred.append(scope)


def rate_limit_take_deferred(request) -> list[str]:
    """The scopes left to the caller (see rate_limit_defer); they are the caller's to charge now."""
    deferred = getattr(request, "_slimy_deferred_scopes", None) or []
    scopes = list(deferred)
    deferred.clear()
    return scopes


def _settle_deferred(request) -> RateLimited | None:
    for scope in rate_limit_take_deferred(request):
        wait = rate_limit_check(request, scope=scope)
        if wait:
            return rate_limited(scope=scope, wait=wait)
    return None


class ScopedRedisThrottle(BaseThrottle):
    """The DRF throttle for every API view (REST_FRAMEWORK DEFAULT_THROTTLE_CLASSES).

    A view's `submit_methods` (the methods that create a job through `accept_job`) have their scope
    charged in the submission guard's pipeline instead of a round trip of their own (rate_limit_defer).
    """

    def allow_request(self, request, view):
        scope = getattr(view, "throttle_scope", None) or ("read" if request.method in SAFE_METHODS else "write")
        if request.method in getattr(view, "submit_methods", ()):
            rate_limit_defer(request, scope=scope)
            return True
        # Raise our own error (details.scope) rather than DRF's Throttled; same 429 and Retry-After.
        rate_limit_enforce(request, scope=scope)
        return True

    def wait(self):
        return None
