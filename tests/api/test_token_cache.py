"""API token look-ups are reused across requests (TOKEN_CACHE_SECONDS); expiry always holds, revocation and
deactivation through the ORM apply at once in the process that made them."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from slimy_site.models import ApiToken
from slimy_site.services import api_token_issue, token_revoke

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.urls")]


@pytest.fixture
def member_key(django_user_model):
    user = django_user_model.objects.create_user(username="tina")
    user.groups.add(Group.objects.get_or_create(name="member")[0])
    return api_token_issue(user=user)


def _client(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _token_queries(ctx) -> int:
    return sum("slimy_site_apitoken" in q["sql"] for q in ctx.captured_queries)


def test_later_requests_with_the_same_token_do_not_look_it_up_again(member_key):
    client = _client(member_key)
    with CaptureQueriesContext(connection) as ctx:
        assert [client.get("/api/me").status_code for _ in range(3)] == [200, 200, 200]
    assert _token_queries(ctx) == 1


def test_cache_off_looks_the_token_up_every_time(member_key, settings):
    settings.TOKEN_CACHE_SECONDS = 0
    client = _client(member_key)
    with CaptureQueriesContext(connection) as ctx:
        client.get("/api/me")
        client.get("/api/me")
    assert _token_queries(ctx) == 2


def test_revoked_token_is_refused_at_once_though_it_was_cached(member_key):
    client = _client(member_key)
    assert client.get("/api/me").status_code == 200
    assert token_revoke(username="tina") is True
    refused = client.get("/api/me")
    assert refused.status_code == 401 and refused.json()["error"] == "authentication_failed"


def test_deactivated_user_is_refused_at_once_though_the_token_was_cached(member_key):
    client = _client(member_key)
    assert client.get("/api/me").status_code == 200
    user = get_user_model().objects.get(username="tina")
    user.is_active = False
    user.save()
    assert client.get("/api/me").status_code == 401


def test_cached_token_still_expires_on_time(member_key, monkeypatch):
    ApiToken.objects.update(expires_at=timezone.now() + dt.timedelta(minutes=10))
    client = _client(member_key)
    assert client.get("/api/me").status_code == 200  # cached now, with its expiry
    later = timezone.now() + dt.timedelta(minutes=11)
    monkeypatch.setattr(timezone, "now", lambda: later)
    refused = client.get("/api/me")
    assert refused.status_code == 401 and "expired" in refused.json()["message"].lower()


def test_roles_cached_on_one_request_do_not_leak_into_the_next(member_key):
    """Each request gets its own copy of the cached user: a role removed shows on the next request."""
    client = _client(member_key)
    assert client.get("/api/me").json()["roles"] == ["member"]
    user = get_user_model().objects.get(username="tina")
    user.groups.clear()  # the role cache is cleared by the signal; the token cache keeps the user
    assert client.get("/api/me").json()["roles"] == []
