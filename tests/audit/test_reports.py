"""audit_report: aggregates checked against counts worked out by hand, downloads in JSON and CSV."""

import csv
import io

import pytest

from audit.models import AuditLog
from queues.models import JobRecord
from tests.factories.audit import write_events

FROM, TO = "2026-03-01T00:00:00Z", "2026-03-04T00:00:00Z"


def _fixture_events(alice, bob):
    e = lambda at, action, rtype, actor, ok=True: {  # noqa: E731
        "occurredAt": at,
        "action": action,
        "resourceType": rtype,
        "actorId": actor,
        "success": ok,
    }
    return [
        e("2026-03-01T10:00:00Z", "login", "user", alice.pk),
        e("2026-03-01T11:00:00Z", "login", "user", alice.pk, ok=False),
        e("2026-03-01T23:59:59Z", "job.retry", "job", bob.pk),
        e("2026-03-02T00:00:00Z", "login", "user", bob.pk),
        e("2026-03-03T08:00:00Z", "chat.message", "conversation", alice.pk),
        e("2026-03-03T09:00:00Z", "job.retry", "job", None, ok=False),
        e("2026-03-04T00:00:00Z", "login", "user", alice.pk),  # outside: `to` is exclusive
        e("2026-02-28T23:59:59Z", "login", "user", alice.pk),  # outside
    ]


@pytest.mark.django_db(transaction=True)
def test_report_job_matches_hand_computed_counts(run_worker, make_api_client, staff, user, other_user):
    write_events(*_fixture_events(user, other_user))
    client = make_api_client(staff)
    accepted = client.post("/api/audit-log/reports", {"occurredFrom": FROM, "occurredTo": TO}, format="json")
    assert accepted.status_code == 202
    job_id = accepted.json()["jobId"]
    pending = client.get(f"/api/audit-log/reports/{job_id}")
    assert pending.status_code == 202 and pending.json()["status"] == "queued"
    run_worker(["audit"])

    report = client.get(f"/api/audit-log/reports/{job_id}").json()["report"]
    assert (report["total"], report["succeeded"], report["failed"], report["successRate"]) == (6, 4, 2, 0.6667)
    assert report["byAction"] == [
        {"action": "login", "count": 3, "failed": 1},
        {"action": "job.retry", "count": 2, "failed": 1},
        {"action": "chat.message", "count": 1, "failed": 0},
    ]
    assert report["byResourceType"] == [
        {"resourceType": "user", "count": 3, "failed": 1},
        {"resourceType": "job", "count": 2, "failed": 1},
        {"resourceType": "conversation", "count": 1, "failed": 0},
    ]
    assert report["byActor"] == [
        {"actorId": user.pk, "actorLabel": "alice", "count": 3, "failed": 1},
        {"actorId": other_user.pk, "actorLabel": "bob", "count": 2, "failed": 0},
        {"actorId": None, "actorLabel": "", "count": 1, "failed": 1},
    ]
    assert report["perDay"] == [
        {"date": "2026-03-01", "count": 3, "failed": 1},
        {"date": "2026-03-02", "count": 1, "failed": 0},
        {"date": "2026-03-03", "count": 2, "failed": 1},
    ]
    assert report["top"]["actions"] == report["byAction"]
    assert JobRecord.objects.get(pk=job_id).result == report  # stored as the job's result

    response = client.get(f"/api/audit-log/reports/{job_id}?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0] == ["section", "key", "label", "count", "failed"]
    assert ["summary", "total", "", "6", "2"] in rows and ["summary", "success_rate", "", "0.6667", ""] in rows
    assert ["action", "login", "", "3", "1"] in rows
    assert ["actor", str(other_user.pk), "bob", "2", "0"] in rows
    assert ["day", "2026-03-03", "", "2", "1"] in rows


@pytest.mark.django_db(transaction=True)
def test_top_ten_and_empty_range(run_worker, make_api_client, staff):
    write_events(
        *[{"occurredAt": "2026-03-01T10:00:00Z", "action": f"a{n:02d}"} for n in range(12) for _ in range(n + 1)]
    )
    assert AuditLog.objects.count() == sum(range(1, 13))
    client = make_api_client(staff)
    job_id = client.post("/api/audit-log/reports", {"occurredFrom": FROM, "occurredTo": TO}, format="json").json()[
        "jobId"
    ]
    empty_id = client.post(
        "/api/audit-log/reports",
        {"occurredFrom": "2020-01-01T00:00:00Z", "occurredTo": "2020-01-02T00:00:00Z"},
        format="json",
    ).json()["jobId"]
    run_worker(["audit"])
    report = client.get(f"/api/audit-log/reports/{job_id}").json()["report"]
    assert [a["action"] for a in report["top"]["actions"]] == [f"a{n:02d}" for n in range(11, 1, -1)]
    assert len(report["byAction"]) == 12
    empty = client.get(f"/api/audit-log/reports/{empty_id}").json()["report"]
    assert (empty["total"], empty["successRate"], empty["perDay"]) == (0, None, [])


@pytest.mark.django_db
def test_report_requests_are_validated_and_private(make_api_client, staff, django_user_model):
    client = make_api_client(staff)
    bad = client.post("/api/audit-log/reports", {"occurredFrom": FROM, "occurredTo": "tomorrow"}, format="json")
    assert bad.status_code == 400 and "occurredTo" in bad.json()["details"]
    # A reversed range is an empty one (the schema cannot state the order): accepted, an empty report.
    assert (
        client.post("/api/audit-log/reports", {"occurredFrom": TO, "occurredTo": FROM}, format="json").status_code
        == 202
    )
    assert client.post("/api/audit-log/reports", {"occurredFrom": FROM}, format="json").status_code == 400
    job_id = client.post("/api/audit-log/reports", {"occurredFrom": FROM, "occurredTo": TO}, format="json").json()[
        "jobId"
    ]
    other_staff = django_user_model.objects.create_user(username="other-staff", is_staff=True)
    other = make_api_client(other_staff).get(f"/api/audit-log/reports/{job_id}")
    assert other.status_code == 404 and other.json()["error"] == "report_not_found"
    assert client.get("/api/audit-log/reports/not-a-uuid").status_code == 404
    assert client.get(f"/api/audit-log/reports/{job_id}?format=xml").status_code == 404
