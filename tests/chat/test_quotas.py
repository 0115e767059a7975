"""Per-tenant daily token quotas: the limit from the admin-editable row or the setting, usage in Redis."""

import asyncio
import datetime as dt

import pytest
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.db import connections
from django.urls import reverse

from chat.models import TenantQuota
from chat.quotas import aquota_charge, aquota_check, quota_charge, quota_check, quota_limit, quota_usage

pytestmark = pytest.mark.django_db

DAY = dt.date(2026, 11, 28)


def test_no_row_and_no_default_is_unlimited(redis_conn, settings):
    settings.CHAT_TENANT_DAILY_TOKENS = 0
    quota_charge(tenant="g1", tokens=10**9, day=DAY)
    decision = quota_check(tenant="g1", tokens=1000, day=DAY)
    assert decision.allowed and decision.limit is None and decision.remaining is None


def test_default_limit_applies_without_a_row(redis_conn, settings):
    settings.CHAT_TENANT_DAILY_TOKENS = 1000
    assert quota_charge(tenant="g1", tokens=600, day=DAY) == 600
    assert quota_check(tenant="g1", tokens=400, day=DAY).allowed
    decision = quota_check(tenant="g1", tokens=401, day=DAY)
    assert not decision.allowed and decision.used == 600 and decision.remaining == 400


def test_a_row_overrides_the_default_both_ways(redis_conn, settings):
    settings.CHAT_TENANT_DAILY_TOKENS = 1000
    TenantQuota.objects.create(tenant="big", daily_tokens=None)
    TenantQuota.objects.create(tenant="muted", daily_tokens=0)
    TenantQuota.objects.create(tenant="small", daily_tokens=50)
    quota_charge(tenant="big", tokens=5000, day=DAY)
    assert quota_check(tenant="big", tokens=5000, day=DAY).allowed
    assert not quota_check(tenant="muted", tokens=1, day=DAY).allowed
    assert quota_limit(tenant="small") == 50 and quota_limit(tenant="other") == 1000


def test_usage_is_per_day_and_expires(redis_conn, settings):
    settings.CHAT_TENANT_DAILY_TOKENS = 100
    quota_charge(tenant="g1", tokens=100, day=DAY)
    assert not quota_check(tenant="g1", tokens=1, day=DAY).allowed
    assert quota_check(tenant="g1", tokens=100, day=DAY + dt.timedelta(days=1)).allowed
    ttl = redis_conn.ttl("slimy:quota:g1:2026-11-28")
    assert 0 < ttl <= 2 * 86400


def test_tenants_are_counted_apart_and_no_tenant_is_never_limited(redis_conn, settings):
    settings.CHAT_TENANT_DAILY_TOKENS = 10
    quota_charge(tenant="g1", tokens=10, day=DAY)
    assert quota_check(tenant="g2", tokens=10, day=DAY).allowed
    assert quota_check(tenant="", tokens=10**6, day=DAY).allowed
    assert quota_charge(tenant="", tokens=5, day=DAY) == 0
    assert quota_usage(tenant="g1", day=DAY) == 10


@pytest.mark.django_db(transaction=True)  # the async ORM reads through another thread's connection
def test_asyncio_twins(redis_server, redis_conn, settings):
    settings.CHAT_TENANT_DAILY_TOKENS = 0
    TenantQuota.objects.create(tenant="g9", daily_tokens=100)

    async def scenario():
        conn = aioredis.Redis.from_url(redis_server.url)
        try:
            used = await aquota_charge(tenant="g9", tokens=70, conn=conn, day=DAY)
            return used, await aquota_check(tenant="g9", tokens=31, conn=conn, day=DAY)
        finally:
            await conn.aclose()
            await sync_to_async(connections.close_all)()  # the ORM thread's connection, or teardown waits on it

    used, decision = asyncio.run(scenario())
    assert used == 70 and not decision.allowed and decision.limit == 100
    assert quota_usage(tenant="g9", day=DAY) == 70  # the sync side sees the same counter


# --- the admin


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser(username="root", password="pw-root-123", email="r@x.test")
    client.force_login(user)
    return client


def test_staff_set_a_quota_in_the_admin_and_see_todays_usage(admin_client, redis_conn):
    response = admin_client.post(
        reverse("admin:chat_tenantquota_add"), {"tenant": "guild-5", "daily_tokens": "2000", "note": "trial"}
    )
    assert response.status_code == 302
    quota = TenantQuota.objects.get(tenant="guild-5")
    assert quota.daily_tokens == 2000
    quota_charge(tenant="guild-5", tokens=123)
    page = admin_client.get(reverse("admin:chat_tenantquota_changelist")).content.decode()
    assert "guild-5" in page and "123" in page


@pytest.mark.parametrize(
    "data,field",
    [
        ({"tenant": "g", "daily_tokens": "-5"}, "daily_tokens"),
        ({"tenant": "g", "daily_tokens": "lots"}, "daily_tokens"),
        ({"tenant": "", "daily_tokens": "5"}, "tenant"),
    ],
)
def test_bad_quota_input_is_a_form_error(admin_client, data, field):
    response = admin_client.post(reverse("admin:chat_tenantquota_add"), data)
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert TenantQuota.objects.count() == 0


def test_a_tenant_has_one_quota(admin_client):
    TenantQuota.objects.create(tenant="g", daily_tokens=1)
    response = admin_client.post(reverse("admin:chat_tenantquota_add"), {"tenant": "g", "daily_tokens": "5"})
    assert response.status_code == 200 and "tenant" in response.context["adminform"].form.errors
