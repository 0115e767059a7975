"""DJANGO_HTTPS=1 turns on HSTS, the SSL redirect, secure cookies and the proxy header; off, plain HTTP works.

Settings are read once per process, so each case runs in a fresh `manage.py` process with its environment.
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
HTTPS_VARIABLES = (
    "DJANGO_HTTPS",
    "DJANGO_DEBUG",
    "DEBUG",
    "SECURE_SSL_REDIRECT",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "SECURE_REDIRECT_EXEMPT",
)

# Requests made inside the configured process: (path, extra headers) -> status, Location, HSTS header.
PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
out = {"settings": {name: getattr(settings, name) for name in (
    "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER", "DEBUG")}}
client = Client()
for name, path, headers in (("plain", "/api/me", {}), ("health", "/health/live", {}),
                            ("proxied", "/api/me", {"HTTP_X_FORWARDED_PROTO": "https"})):
    r = client.get(path, **headers)
    out[name] = [r.status_code, r.get("Location"), r.get("Strict-Transport-Security")]
print(json.dumps(out))
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in HTTPS_VARIABLES}
    env.update(SECRET_KEY=secrets.token_urlsafe(60), DJANGO_SETTINGS_MODULE="slimy_site.settings", **extra)
    return env


def _run(args, **extra):
    return subprocess.run(
        [sys.executable, *args], cwd=BASE_DIR, env=_env(**extra), capture_output=True, text=True, timeout=120
    )


def _probe(**extra):
    done = _run(["-c", PROBE], **extra)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_check_deploy_passes_with_django_https_and_fails_without():
    ok = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], DJANGO_DEBUG="0", DJANGO_HTTPS="1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "no issues" in ok.stdout
    plain = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], DJANGO_DEBUG="0")
    assert plain.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in plain.stderr


def test_django_https_redirects_plain_http_and_sends_hsts_behind_the_proxy():
    out = _probe(DJANGO_HTTPS="1")
    assert out["settings"]["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert out["settings"]["SESSION_COOKIE_SECURE"] and out["settings"]["CSRF_COOKIE_SECURE"]
    assert out["plain"][0] == 301 and out["plain"][1] == "https://testserver/api/me"
    assert out["health"][0] == 200  # load balancer probes are not redirected
    status, _, hsts = out["proxied"]
    assert status == 401 and hsts == "max-age=31536000; includeSubDomains; preload"


def test_each_setting_can_be_overridden_from_the_environment():
    out = _probe(
        DJANGO_HTTPS="1",
        SECURE_SSL_REDIRECT="0",
        SECURE_HSTS_SECONDS="60",
        SECURE_PROXY_SSL_HEADER="HTTP_X_SCHEME=https",
        SESSION_COOKIE_SECURE="0",
    )
    assert out["settings"]["SECURE_SSL_REDIRECT"] is False and out["settings"]["SESSION_COOKIE_SECURE"] is False
    assert out["settings"]["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_SCHEME", "https"]
    assert out["plain"][0] == 401  # no redirect
    assert out["proxied"][2] is None  # X-Forwarded-Proto is no longer trusted: not secure, no HSTS


def test_defaults_serve_plain_http():
    out = _probe()
    assert out["settings"] == {
        "SECURE_SSL_REDIRECT": False,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_PROXY_SSL_HEADER": None,
        "DEBUG": False,
    }
    assert out["plain"][0] == 401 and out["plain"][2] is None


def test_a_malformed_proxy_header_is_a_system_check_error():
    done = _run(["manage.py", "check"], SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto")
    assert done.returncode != 0 and "slimy_site.E004" in done.stderr
