"""Accounts: tokens, roles, the user_add / token_rotate commands, sessions with CSRF."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.urls")]


def _token_client(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _user_add(*args):
    out = io.StringIO()
    call_command("user_add", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def test_missing_credentials_are_401_with_www_authenticate():
    response = APIClient().get("/api/jobs")
    assert response.status_code == 401
    assert response.json() == {
        "ok": False,
        "error": "not_authenticated",
        "message": "Authentication credentials were not provided.",
    }
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("header", ["Token wrong-key", "Token", "Token a b", "Bearer abc"])
def test_wrong_credentials_are_401(header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/jobs")
    assert response.status_code == 401
    assert response.json()["error"] in ("authentication_failed", "not_authenticated")


def test_user_add_prints_a_working_token_with_the_role():
    key = _user_add("carol", "--role", "club")
    me = _token_client(key).get("/api/me").json()
    assert me["username"] == "carol" and me["roles"] == ["club"]
    assert not get_user_model().objects.get(username="carol").has_usable_password()


def test_user_add_staff_sets_is_staff():
    key = _user_add("root2", "--role", "staff")
    assert _token_client(key).get("/api/me").json()["isStaff"] is True


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["dave", "--role", "admin"], "invalid choice"),
        (["dave"], "--role"),
        (["bad name!", "--role", "member"], "Invalid username"),
    ],
)
def test_user_add_refuses_bad_input(args, fragment):
    with pytest.raises(CommandError, match=fragment):
        _user_add(*args)


def test_user_add_refuses_an_existing_user():
    _user_add("erin", "--role", "member")
    with pytest.raises(CommandError, match="already exists"):
        _user_add("erin", "--role", "member")


def test_token_rotate_revokes_the_old_token():
    old = _user_add("fay", "--role", "member")
    out = io.StringIO()
    call_command("token_rotate", "fay", stdout=out, stderr=io.StringIO())
    new = out.getvalue().strip()
    assert new != old
    revoked = _token_client(old).get("/api/me")
    assert revoked.status_code == 401 and revoked.json()["error"] == "authentication_failed"
    assert _token_client(new).get("/api/me").status_code == 200


def test_token_rotate_revoke_leaves_no_token():
    key = _user_add("gus", "--role", "service")
    call_command("token_rotate", "gus", "--revoke", stdout=io.StringIO(), stderr=io.StringIO())
    assert _token_client(key).get("/api/me").status_code == 401


def test_token_rotate_unknown_user_is_an_error():
    with pytest.raises(CommandError, match="No user"):
        call_command("token_rotate", "nobody", stdout=io.StringIO(), stderr=io.StringIO())


def test_inactive_users_token_is_refused():
    key = _user_add("hal", "--role", "member")
    get_user_model().objects.filter(username="hal").update(is_active=False)
    assert _token_client(key).get("/api/me").status_code == 401


ROLE_MATRIX = [
    ("member", {"members-only": 200, "service-only": 403, "staff-only": 403}),
    ("club", {"members-only": 200, "service-only": 403, "staff-only": 403}),
    ("service", {"members-only": 403, "service-only": 200, "staff-only": 403}),
    ("staff", {"members-only": 200, "service-only": 200, "staff-only": 200}),
]


@pytest.mark.parametrize("role, expected", ROLE_MATRIX)
def test_roles_decide_which_endpoints_answer_403(role, expected):
    client = _token_client(_user_add(f"r-{role}", "--role", role))
    for endpoint, status in expected.items():
        response = client.get(f"/api/test/{endpoint}")
        assert response.status_code == status, (role, endpoint)
        if status == 403:
            assert response.json()["error"] == "permission_denied"


def test_a_user_without_any_role_is_403_on_role_endpoints(django_user_model, make_api_client):
    nobody = django_user_model.objects.create_user(username="norole", password="pw-norole-1")
    assert make_api_client(nobody).get("/api/test/members-only").status_code == 403


def test_session_auth_needs_csrf_for_writes(member):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(member)
    assert client.get("/api/me").status_code == 200
    response = client.post("/api/test/echo", {"value": "x"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
