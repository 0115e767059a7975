"""Object-level access on every endpoint that takes an id, across areas: someone else's object is a 404."""

import pytest

from queues.services import job_enqueue
from tests.factories.api import UserFactory
from tests.factories.chat import ConversationFactory

pytestmark = pytest.mark.django_db


def _error(response):
    assert response["Content-Type"].startswith("application/json")
    return response.status_code, response.json()["error"]


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/api/chat/conversations/{id}", None),
        ("patch", "/api/chat/conversations/{id}", {"title": "mine now"}),
        ("delete", "/api/chat/conversations/{id}", None),
        ("post", "/api/chat/messages", {"conversationId": "{id}", "role": "user", "content": "hi"}),
    ],
)
def test_another_users_conversation_is_404(member, other_member, make_api_client, method, path, body):
    conversation = ConversationFactory(owner=other_member)
    if body is not None:
        body = {k: (v.format(id=conversation.pk) if isinstance(v, str) else v) for k, v in body.items()}
    response = getattr(make_api_client(member), method)(path.format(id=conversation.pk), body, format="json")
    assert _error(response) == (404, "conversation_not_found")


def test_another_users_conversation_db_job_is_404(member, other_member, make_api_client):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=other_member)
    assert _error(make_api_client(member).get(f"/api/chat/db-jobs/{job.id}"))[0] == 404


def test_reports_are_staff_only_and_only_their_requesters(member, make_api_client):
    requester, other_staff = UserFactory(role="staff"), UserFactory(role="staff")
    job = job_enqueue(
        job_type="audit_report",
        owner=requester,
        payload={"occurredFrom": "2025-01-01T00:00:00Z", "occurredTo": "2025-01-02T00:00:00Z"},
    )
    url = f"/api/audit-log/reports/{job.id}"
    assert _error(make_api_client(member).get(url)) == (403, "permission_denied")
    assert _error(make_api_client(other_staff).get(url)) == (404, "report_not_found")
    assert make_api_client(requester).get(url).status_code in (200, 202)
