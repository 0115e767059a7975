"""Roles are enforced on every endpoint, documented in the schema, and removing them suspends (issue 15, item 5)."""

import uuid

import pytest
import yaml

from queues.services import job_enqueue
from slimy_site import roles
from tests.factories.api import UserFactory
from tests.factories.chat import ConversationFactory

pytestmark = pytest.mark.django_db

CHAT_SUBMISSIONS = [
    ("post", "/api/chat/conversations", {"title": "hi"}),
    ("post", "/api/chat/bot", {"prompt": "hello"}),
]


def _call(client, method, path, body=None):
    return getattr(client, method)(path, body, format="json") if body is not None else getattr(client, method)(path)


@pytest.mark.parametrize(
    "method, path, body",
    [
        *CHAT_SUBMISSIONS,
        ("get", "/api/chat/conversations", None),
        ("get", "/api/jobs", None),
        ("post", "/api/audit-log", {"action": "x"}),
    ],
)
def test_a_user_without_a_role_is_403_permission_denied(make_api_client, method, path, body):
    nobody = UserFactory(username="norole")
    response = _call(make_api_client(nobody), method, path, body)
    assert response.status_code == 403, response.content
    assert response.json()["error"] == "permission_denied"


def test_a_user_without_a_role_may_still_ask_who_they_are(make_api_client):
    body = make_api_client(UserFactory(username="norole")).get("/api/me").json()
    assert body["roles"] == [] and body["ok"] is True


def test_removing_every_role_suspends_a_member(make_api_client):
    member = UserFactory(username="mia", role="member")
    conversation = ConversationFactory(owner=member)
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member)
    client = make_api_client(member)
    assert client.get("/api/chat/conversations").status_code == 200
    assert client.post("/api/chat/conversations", {"title": "a"}, format="json").status_code == 202
    member.groups.clear()
    for method, path, body in [
        *CHAT_SUBMISSIONS,
        ("get", f"/api/chat/conversations/{conversation.pk}", None),
        ("post", "/api/chat/messages", {"conversationId": str(conversation.pk), "content": "x"}),
        ("get", f"/api/jobs/{job.pk}", None),
        ("post", f"/api/jobs/{job.pk}/cancel", {}),
    ]:
        response = _call(client, method, path, body)
        assert response.status_code == 403, (method, path, response.content)


def test_service_accounts_post_audit_events_and_read_their_jobs_but_cannot_chat(make_api_client):
    service = UserFactory(username="svc", role="service")
    client = make_api_client(service)
    accepted = client.post("/api/audit-log", {"action": "invoice.paid"}, format="json")
    assert accepted.status_code == 202
    assert client.get(f"/api/jobs/{accepted.json()['jobId']}").status_code == 200
    for method, path, body in CHAT_SUBMISSIONS:
        assert _call(client, method, path, body).status_code == 403
    assert client.get("/api/audit-log").status_code == 403


@pytest.mark.parametrize("role", ["member", "club"])
def test_people_use_chat_and_may_not_post_audit_events(make_api_client, role):
    client = make_api_client(UserFactory(username=f"u-{role}", role=role))
    assert client.post("/api/chat/conversations", {}, format="json").status_code == 202
    assert client.post("/api/audit-log", {"action": "x"}, format="json").status_code == 403


def test_every_permission_class_checks_roles_through_user_roles(monkeypatch, make_api_client):
    # The one place a per-request cache goes: every role check must go through it.
    calls = []
    real = roles.user_roles
    monkeypatch.setattr(roles, "user_roles", lambda user: calls.append(user.pk) or real(user))
    member = UserFactory(username="counted", role="member")
    assert make_api_client(member).get("/api/chat/conversations").status_code == 200
    assert calls == [member.pk]


@pytest.fixture
def schema(client):
    return yaml.safe_load(client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi").content)


def test_the_schema_names_the_roles_of_every_operation(schema):
    expected = {
        "/api/chat/conversations": {"member", "club", "staff"},
        "/api/chat/bot": {"member", "club", "staff"},
        "/api/jobs": {"member", "club", "service", "staff"},
        "/api/audit-log/stats": {"staff"},
    }
    for path, want in expected.items():
        for operation in schema["paths"][path].values():
            assert set(operation["x-roles"]) == want, path
            codes = {
                e["value"]["error"]
                for e in operation["responses"]["403"]["content"]["application/json"]["examples"].values()
            }
            assert "permission_denied" in codes and "Roles:" in operation["description"]
    assert set(schema["paths"]["/api/audit-log"]["post"]["x-roles"]) == {"service", "staff"}
    assert "x-roles" not in schema["paths"]["/api/me"]["get"]
    roleless = [
        f"{m} {p}"
        for p, ops in schema["paths"].items()
        for m, op in ops.items()
        if "x-roles" not in op and p not in ("/api/me", "/api/metrics")
    ]
    assert roleless == []


def test_an_unknown_conversation_is_still_404_for_a_member(make_api_client):
    client = make_api_client(UserFactory(username="m404", role="member"))
    assert client.get(f"/api/chat/conversations/{uuid.uuid4()}").status_code == 404
