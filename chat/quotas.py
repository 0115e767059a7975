"""Per-tenant daily token quotas for LLM replies.

The limit is a TenantQuota row (admin-editable) or, without one, CHAT_TENANT_DAILY_TOKENS (0 = none).
Usage is an INCRBY counter per tenant and UTC day in Redis, shared by every worker and gone two days
later. A quota is a soft limit: a Redis that lost its data forgets the day's usage (the tenant gets more,
never less), and concurrent replies may overshoot by what they use between check and charge.
What to do when over quota (the fallback reply with `quota_exceeded`) is the caller's business.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import cast

from django.conf import settings

from chat.models import TenantQuota

KEY = "slimy:quota:{tenant}:{day}"
KEEP_SECONDS = 2 * 86400


@dataclass(frozen=True)
class QuotaDecision:
    allowed: bool
    used: int
    limit: int | None  # None = unlimited
    tenant: str

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)


def _day(day: dt.date | None) -> str:
    return (day or dt.datetime.now(dt.UTC).date()).isoformat()


def _key(tenant: str, day: dt.date | None) -> str:
    return KEY.format(tenant=tenant, day=_day(day))


def _default_limit() -> int | None:
    return settings.CHAT_TENANT_DAILY_TOKENS or None


def _decide(tenant: str, used: int, limit: int | None, tokens: int) -> QuotaDecision:
    return QuotaDecision(allowed=limit is None or used + max(tokens, 0) <= limit, used=used, limit=limit, tenant=tenant)


def _conn(conn):
    if conn is not None:
        return conn
    from queues.connections import get_connection

    return get_connection()


def quota_limit(*, tenant: str) -> int | None:
    """The tenant's tokens per day: its TenantQuota row (None there = unlimited), else the setting."""
    row = TenantQuota.objects.filter(tenant=tenant).values("daily_tokens").first()
    return _default_limit() if row is None else row["daily_tokens"]


def quota_limits(*, tenants) -> dict[str, int | None]:
    """`quota_limit` of several tenants in one query: {tenant: tokens per day or None}."""
    tenants = set(tenants)
    if not tenants:
        return {}
    rows = dict(TenantQuota.objects.filter(tenant__in=tenants).values_list("tenant", "daily_tokens"))
    default = _default_limit()
    return {tenant: rows[tenant] if tenant in rows else default for tenant in tenants}


def quota_usage(*, tenant: str, day: dt.date | None = None, conn=None) -> int:
    return int(_conn(conn).get(_key(tenant, day)) or 0)


def quota_check(*, tenant: str, tokens: int = 0, day: dt.date | None = None, conn=None) -> QuotaDecision:
    """Whether `tenant` may spend `tokens` more today. A job without tenant is never limited."""
    if not tenant:
        return QuotaDecision(allowed=True, used=0, limit=None, tenant=tenant)
    limit = quota_limit(tenant=tenant)
    return _decide(tenant, quota_usage(tenant=tenant, day=day, conn=conn), limit, tokens)


def quota_charge(*, tenant: str, tokens: int, day: dt.date | None = None, conn=None) -> int:
    """Count `tokens` (the reply's real usage) against the tenant's day; returns the day's total."""
    if not tenant or tokens <= 0:
        return quota_usage(tenant=tenant, day=day, conn=conn) if tenant else 0
    key = _key(tenant, day)
    with _conn(conn).pipeline() as pipe:
        pipe.incrby(key, int(tokens))
        pipe.expire(key, KEEP_SECONDS)
        used, _ = pipe.execute()
    return int(used)


# --- asyncio twins (the async reply job): the ORM's async API and a redis.asyncio client

_UNKNOWN = object()


async def aquota_check(
    *, tenant: str, tokens: int = 0, conn, day: dt.date | None = None, limit: int | None | object = _UNKNOWN
) -> QuotaDecision:
    """`limit`: the tenant's `quota_limit`, when the caller read it already (on its database pool)."""
    if not tenant:
        return QuotaDecision(allowed=True, used=0, limit=None, tenant=tenant)
    if limit is _UNKNOWN:
        row = await TenantQuota.objects.filter(tenant=tenant).values("daily_tokens").afirst()
        limit = _default_limit() if row is None else row["daily_tokens"]
    used = int(await conn.get(_key(tenant, day)) or 0)
    return _decide(tenant, used, cast("int | None", limit), tokens)


async def aquota_charge(*, tenant: str, tokens: int, conn, day: dt.date | None = None) -> int:
    if not tenant or tokens <= 0:
        return int(await conn.get(_key(tenant, day)) or 0) if tenant else 0
    key = _key(tenant, day)
    async with conn.pipeline() as pipe:
        pipe.incrby(key, int(tokens))
        pipe.expire(key, KEEP_SECONDS)
        used, _ = await pipe.execute()
    return int(used)
