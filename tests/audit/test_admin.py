"""The audit log in the admin: read-only for everyone, verify button, report form."""

import pytest
from django.db import connection

from queues.models import JobRecord
from tests.factories.audit import EventFactory, write_events

pytestmark = pytest.mark.django_db

BASE = "/admin/audit/auditlog/"


def test_superuser_can_read_but_never_add_change_or_delete(client, superuser):
    row = write_events(EventFactory(action="user.login", requestId="req-xyz", resourceId="R-1"))[0]
    client.force_login(superuser)
    page = client.get(BASE)
    assert page.status_code == 200 and b"user.login" in page.content
    assert b"Verify chain" in page.content and b"Reports" in page.content
    assert b"Add audit log entry" not in page.content and b"delete_selected" not in page.content
    assert client.get(f"{BASE}add/").status_code == 403
    detail = client.get(f"{BASE}{row.id}/change/")
    assert detail.status_code == 200 and b"req-xyz" in detail.content and b'name="_save"' not in detail.content
    assert client.post(f"{BASE}{row.id}/change/", {"action": "edited"}).status_code == 403
    assert client.post(f"{BASE}{row.id}/delete/", {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert row.action == "user.login"


def test_search_by_request_id_and_resource(client, superuser):
    one, two = write_events(EventFactory(requestId="req-find-me"), EventFactory(resourceId="R-77"))
    client.force_login(superuser)
    links = [f"{BASE}{row.id}/change/".encode() for row in (one, two)]
    found = client.get(BASE, {"q": "req-find-me"}).content
    assert links[0] in found and links[1] not in found
    found = client.get(BASE, {"q": "R-77"}).content
    assert links[1] in found and links[0] not in found
    assert client.get(BASE, {"occurred_at__year": "2026"}).status_code == 200


def test_verify_page_shows_the_chain_state(client, superuser):
    rows = write_events(*EventFactory.build_batch(3))
    client.force_login(superuser)
    assert b"Chain intact." in client.get(f"{BASE}verify/").content
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditlog WHERE id = %s", [rows[1].id])
    page = client.get(f"{BASE}verify/").content.decode()
    assert "Chain BROKEN: removed" in page and f"at row {rows[2].id}" in page


def test_staff_without_view_permission_sees_nothing(client, staff):
    client.force_login(staff)
    assert client.get(BASE).status_code == 403
    assert client.get(f"{BASE}verify/").status_code == 302


def test_report_form_starts_a_report_job(client, superuser):
    client.force_login(superuser)
    assert client.get(f"{BASE}report/").status_code == 200
    bad = client.post(f"{BASE}report/", {"occurred_from": "2026-02-01 00:00", "occurred_to": "2026-01-01 00:00"})
    assert bad.status_code == 200 and b"must be after" in bad.content and not JobRecord.objects.exists()
    done = client.post(f"{BASE}report/", {"occurred_from": "2026-01-01 00:00", "occurred_to": "2026-02-01 00:00"})
    assert done.status_code == 302
    job = JobRecord.objects.get(job_type="audit_report")
    assert job.owner == superuser and job.payload["occurredFrom"].startswith("2026-01-01T00:00:00")
    assert str(job.pk).encode() in client.get(f"{BASE}report/").content
