"""API tokens at rest: only a SHA-256 digest is stored, tokens carry a prefix that redaction knows,
they may expire, earlier plain-text tokens keep working once migrated, and the admin shows no secret."""

import datetime as dt
import hashlib
import importlib
import io
import secrets

import pytest
from django.apps import apps
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from audit.redaction import REDACTED, redact
from slimy_site.authentication import HashedTokenAuthentication
from slimy_site.models import ApiToken

pytestmark = pytest.mark.django_db


def _client(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _user_add(username, role="member"):
    out = io.StringIO()
    call_command("user_add", username, "--role", role, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def _stored_text():
    """Every token column as text, to prove the token is nowhere in the table."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_to_json(t)::text FROM slimy_site_apitoken t")
        return " ".join(row[0] for row in cursor.fetchall())


def test_only_a_digest_of_the_prefixed_token_is_stored():
    key = _user_add("tia")
    assert key.startswith("slimy_") and len(key) == len("slimy_") + 64
    token = ApiToken.objects.get(user__username="tia")
    assert token.digest == hashlib.sha256(key.encode()).hexdigest()
    assert key not in _stored_text() and key.removeprefix("slimy_") not in _stored_text()
    assert "authtoken_token" not in connection.introspection.table_names()
    assert _client(key).get("/api/me").json()["username"] == "tia"


def test_token_rotate_prints_a_new_token_once_and_replaces_the_old():
    old = _user_add("uma")
    out = io.StringIO()
    call_command("token_rotate", "uma", stdout=out, stderr=io.StringIO())
    new = out.getvalue().strip()
    assert new.startswith("slimy_") and new != old
    assert ApiToken.objects.filter(user__username="uma").count() == 1
    assert _client(old).get("/api/me").status_code == 401
    assert _client(new).get("/api/me").status_code == 200


def test_authentication_is_one_query(django_assert_num_queries):
    key = _user_add("vic")
    with django_assert_num_queries(1):
        user, token = HashedTokenAuthentication().authenticate_credentials(key)
    assert user.username == "vic" and isinstance(token, ApiToken)


def test_tokens_expire_after_the_configured_days(settings):
    settings.API_TOKEN_TTL_DAYS = 30
    key = _user_add("wes")
    token = ApiToken.objects.get(user__username="wes")
    assert abs(token.expires_at - (timezone.now() + dt.timedelta(days=30))) < dt.timedelta(minutes=1)
    assert _client(key).get("/api/me").status_code == 200
    # Saved through the ORM (as the admin does): the process's token cache forgets it at once (a bulk
    # UPDATE would reach it within TOKEN_CACHE_SECONDS).
    token.expires_at = timezone.now() - dt.timedelta(seconds=1)
    token.save(update_fields=["expires_at"])
    response = _client(key).get("/api/me")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error": "authentication_failed", "message": "Token expired."}


def test_tokens_do_not_expire_by_default():
    _user_add("xan")
    assert ApiToken.objects.get(user__username="xan").expires_at is None


def test_plain_text_tokens_of_earlier_versions_keep_working_once_hashed(django_user_model):
    user = django_user_model.objects.create_user(username="yul")
    old_key = secrets.token_hex(20)  # DRF's authtoken format: 40 hex characters
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, created timestamptz NOT NULL,"
            " user_id integer NOT NULL UNIQUE)"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, %s, %s)", [old_key, timezone.now(), user.pk])
    migration = importlib.import_module("slimy_site.migrations.0001_security_api_tokens")
    with connection.schema_editor() as editor:
        migration.hash_legacy_tokens(apps, editor)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone()[0] == 0  # no plain text left
    token = ApiToken.objects.get(user=user)
    assert token.legacy and old_key not in _stored_text()
    assert _client(old_key).get("/api/me").json()["username"] == "yul"


def test_the_admin_shows_no_token_secret(client, django_user_model):
    key = _user_add("zed")
    token = ApiToken.objects.get(user__username="zed")
    client.force_login(
        django_user_model.objects.create_superuser(username="root", password="pw-root-123", email="r@x.test")
    )
    pages = [
        client.get(reverse("admin:slimy_site_apitoken_changelist")),
        client.get(reverse("admin:slimy_site_apitoken_change", args=[token.pk])),
    ]
    for page in pages:
        assert page.status_code == 200
        text = page.content.decode()
        assert "zed" in text
        assert key not in text and key.removeprefix("slimy_") not in text and token.digest not in text
    assert client.get(reverse("admin:slimy_site_apitoken_add")).status_code == 403


def test_audit_redaction_recognises_the_token_prefix():
    key = "slimy_" + secrets.token_hex(32)
    assert redact({"note": f"client sent Token {key}", "header": key, "list": [key]}) == {
        "note": REDACTED,
        "header": REDACTED,
        "list": [REDACTED],
    }
    assert redact({"note": "slimy_audit_events_written_total"}) == {"note": "slimy_audit_events_written_total"}
