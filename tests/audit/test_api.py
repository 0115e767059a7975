"""The /api/audit-log endpoints: who may do what, ingestion, filters, pagination, limits."""

import pytest

from audit.models import AuditLog
from queues.models import JobRecord
from tests.factories.audit import EventFactory, write_events

pytestmark = pytest.mark.django_db


def test_permissions(make_api_client, user, staff, service_user):
    anon, plain, service = make_api_client(), make_api_client(user), make_api_client(service_user)
    event = {"action": "login"}
    assert anon.post("/api/audit-log", event, format="json").status_code == 401
    denied = plain.post("/api/audit-log", event, format="json")
    assert denied.status_code == 403 and denied.json()["error"] == "permission_denied"
    assert service.post("/api/audit-log", event, format="json").status_code == 202
    assert make_api_client(staff).post("/api/audit-log", event, format="json").status_code == 202
    for path in ("", "/1", "/stats", "/verify"):
        assert plain.get(f"/api/audit-log{path}").status_code == 403
        assert service.get(f"/api/audit-log{path}").status_code == 403
    assert service.post("/api/audit-log/reports", {}, format="json").status_code == 403


def test_post_one_event_enqueues_log_event_with_redacted_details(make_api_client, service_user):
    response = make_api_client(service_user).post(
        "/api/audit-log",
        {
            "action": "invoice.pay",
            "resourceType": "invoice",
            "resourceId": "INV-1",
            "details": {"card": {"token": "tok_123"}},
            "actorId": 77,
        },
        format="json",
        HTTP_X_REQUEST_ID="req-from-client",
    )
    assert response.status_code == 202
    body = response.json()
    job = JobRecord.objects.get(pk=body["jobId"])
    assert (job.job_type, job.queue, body["events"]) == ("log_event", "audit", 1)
    assert job.payload["details"] == {"card": {"token": "[redacted]"}}
    assert job.payload["actorId"] == 77 and job.payload["requestId"]


def test_post_without_actor_names_the_caller(make_api_client, service_user):
    job_id = make_api_client(service_user).post("/api/audit-log", {"action": "sync"}, format="json").json()["jobId"]
    payload = JobRecord.objects.get(pk=job_id).payload
    assert (payload["actorId"], payload["actorLabel"]) == (service_user.pk, "svc-billing")


def test_post_list_enqueues_one_bulk_job_and_limits_its_size(make_api_client, service_user):
    client = make_api_client(service_user)
    response = client.post("/api/audit-log", [{"action": "a"}, {"action": "b"}], format="json")
    assert response.status_code == 202 and response.json()["events"] == 2
    assert JobRecord.objects.get(pk=response.json()["jobId"]).job_type == "log_events_bulk"
    too_many = client.post("/api/audit-log", [{"action": "a"}] * 1001, format="json")
    assert too_many.status_code == 400 and too_many.json()["error"] == "too_many_events"
    assert client.post("/api/audit-log", [], format="json").status_code == 400


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "action"),
        ({"action": ""}, "action"),
        ({"action": "x", "colour": 1}, "colour"),
        ({"action": "x", "ip": "999.1.1.1"}, "ip"),
        ({"action": "x", "occurredAt": "yesterday"}, "occurredAt"),
        ({"action": "x", "details": ["not", "a", "dict"]}, "details"),
        ("just a string", "body"),
    ],
)
def test_bad_events_are_400_with_field_errors(make_api_client, service_user, body, field):
    response = make_api_client(service_user).post("/api/audit-log", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["ok"] is False and field in str(response.json()["details"])
    assert not JobRecord.objects.exists()


def test_bad_event_in_a_list_names_its_position(make_api_client, service_user):
    response = make_api_client(service_user).post("/api/audit-log", [{"action": "ok"}, {"nope": 1}], format="json")
    assert response.status_code == 400
    assert "1" in response.json()["details"]["events"]


def test_list_filters_and_newest_first(make_api_client, staff, user):
    rows = write_events(
        EventFactory(action="login", actorId=user.pk, occurredAt="2026-01-01T10:00:00Z", requestId="r-1"),
        EventFactory(action="login", actorId=user.pk, occurredAt="2026-01-02T10:00:00Z", success=False),
        EventFactory(action="job.retry", resourceType="job", resourceId="J9", occurredAt="2026-01-03T10:00:00Z"),
    )
    client = make_api_client(staff)

    def ids(query=""):
        response = client.get(f"/api/audit-log{query}")
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    assert ids() == [rows[2].id, rows[1].id, rows[0].id]
    assert ids(f"?actor={user.pk}") == [rows[1].id, rows[0].id]
    assert ids("?action=login&success=false") == [rows[1].id]
    assert ids("?resourceType=job&resourceId=J9") == [rows[2].id]
    assert ids("?requestId=r-1") == [rows[0].id]
    assert ids("?from=2026-01-02T00:00:00Z&to=2026-01-03T10:00:00Z") == [rows[1].id]
    detail = client.get(f"/api/audit-log/{rows[2].id}").json()
    assert detail["eventId"] == str(rows[2].event_id) and detail["rowHash"] == rows[2].row_hash


def test_cursor_pagination_walks_every_row_once(make_api_client, staff):
    write_events(
        *[EventFactory(occurredAt="2026-01-01T10:00:00Z") for _ in range(5)],
        *[EventFactory(occurredAt=f"2026-01-0{d}T10:00:00Z") for d in range(2, 9)],
    )
    client = make_api_client(staff)
    seen, url = [], "/api/audit-log?limit=5"
    while url:
        body = client.get(url).json()
        seen += [r["id"] for r in body["results"]]
        url = f"/api/audit-log?limit=5&cursor={body['nextCursor']}" if body["nextCursor"] else None
    expected = list(AuditLog.objects.order_by("-occurred_at", "-id").values_list("id", flat=True))
    assert seen == expected and len(seen) == 12


@pytest.mark.parametrize(
    "query, field",
    [
        ("?limit=1001", "limit"),
        ("?limit=0", "limit"),
        ("?cursor=garbage", "cursor"),
        ("?actor=bob", "actor"),
        ("?actor=0", "actor"),
        ("?colour=red", "colour"),
    ],
)
def test_bad_list_queries_are_400(make_api_client, staff, query, field):
    response = make_api_client(staff).get(f"/api/audit-log{query}")
    assert response.status_code == 400 and field in response.json()["details"]


def test_detail_not_found_and_stats(make_api_client, staff):
    write_events(EventFactory(action="login"), EventFactory(action="login", success=False), EventFactory(action="x"))
    client = make_api_client(staff)
    missing = client.get("/api/audit-log/999999999")
    assert missing.status_code == 404 and missing.json()["error"] == "audit_event_not_found"
    assert client.get("/api/audit-log/9999999999999999999").status_code == 404
    stats = client.get("/api/audit-log/stats").json()
    assert (stats["total"], stats["failed"], stats["successRate"]) == (3, 1, 0.6667)
    assert stats["byAction"] == [{"action": "login", "count": 2, "failed": 1}, {"action": "x", "count": 1, "failed": 0}]


def test_a_full_batch_of_1000_realistic_events_fits_the_body_limit(make_api_client, service_user, settings):
    event = {
        "action": "invoice.paid",
        "resourceType": "invoice",
        "resourceId": "inv-000000000001",
        "details": {"amount": 1999, "currency": "EUR", "note": "x" * 120},
        "ip": "203.0.113.7",
        "userAgent": "billing-service/2.3 (+https://example.invalid)",
    }
    client = make_api_client(service_user)
    body = [event] * 1000
    response = client.post("/api/audit-log", body, format="json")
    assert response.status_code == 202, response.json()
    assert response.json()["events"] == 1000
    settings.API_MAX_BODY_BYTES_BY_PATH = {"/api/audit-log": 1024}
    refused = client.post("/api/audit-log", body, format="json")
    assert refused.status_code == 413 and refused.json()["details"]["maxBytes"] == 1024
