"""`make run`'s web server (slimy_site.asgi) in front of the threaded routes, as a real process."""

from __future__ import annotations

import http.client
import json

import pytest
from django.contrib.auth.models import Group

from queues.models import JobRecord
from slimy_site.asgi import BODY_PRELOAD_BYTES
from slimy_site.services import api_token_issue
from tests.queues.test_event_streams_server import web  # noqa: F401 - the server fixture

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_body_bigger_than_what_the_loop_reads_first_reaches_the_view_whole(django_user_model, web):  # noqa: F811
    server = web()
    service = django_user_model.objects.create_user(username="svc-billing", password="pw-svc-123")
    service.groups.add(Group.objects.get_or_create(name="service")[0])
    events = [
        {
            "action": "invoice.pay",
            "resourceType": "invoice",
            "resourceId": f"INV-{i}",
            "details": {"note": f"{i:04d}" + "x" * 400},
        }
        for i in range(1000)
    ]
    body = json.dumps(events).encode()
    assert len(body) > 1.5 * BODY_PRELOAD_BYTES  # the rest is read from the request's thread
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(
        "POST",
        "/api/audit-log",
        body=body,
        headers={"Authorization": f"Token {api_token_issue(user=service)}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    answer = json.loads(response.read())
    conn.close()
    assert response.status == 202, answer
    assert answer["events"] == 1000
    job = JobRecord.objects.get(pk=answer["jobId"])
    assert [e["resourceId"] for e in job.payload["events"]] == [f"INV-{i}" for i in range(1000)]
