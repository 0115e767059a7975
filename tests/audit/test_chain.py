"""Tamper evidence: the verifier (command, API, function) finds an edited, a deleted and an inserted row."""

import io
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from audit.chain import chain_verify, compute_hash
from audit.models import AuditChainHead, AuditLog
from tests.factories.audit import EventFactory, write_events

pytestmark = pytest.mark.django_db


def _raw(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_intact_chain_links_every_row_to_the_previous_one():
    rows = write_events(*EventFactory.build_batch(3)) + write_events(*EventFactory.build_batch(2))
    assert [r.prev_hash for r in rows[1:]] == [r.row_hash for r in rows[:-1]]
    assert rows[0].prev_hash == "0" * 64
    head = AuditChainHead.objects.get()
    assert (head.last_id, head.last_hash) == (rows[-1].id, rows[-1].row_hash)
    report = chain_verify()
    assert report.ok and report.checked == 5
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert "audit chain OK: 5 row(s)" in out.getvalue()


def test_edited_row_is_reported_as_altered():
    rows = write_events(*EventFactory.build_batch(4))
    _raw("UPDATE audit_auditlog SET details = '{\"amount\": 1000}' WHERE id = %s", [rows[2].id])
    report = chain_verify()
    assert (report.ok, report.kind, report.row_id) == (False, "altered", rows[2].id)
    with pytest.raises(CommandError, match=f"altered.*row {rows[2].id}"):
        call_command("audit_verify", stdout=io.StringIO())


def test_edited_and_rehashed_row_is_still_caught_at_the_next_link():
    rows = write_events(*EventFactory.build_batch(4))
    row = AuditLog.objects.get(pk=rows[1].id)
    row.action = "nothing.to.see"
    new_hash = compute_hash(row, row.prev_hash)
    _raw("UPDATE audit_auditlog SET action = %s, row_hash = %s WHERE id = %s", [row.action, new_hash, row.id])
    report = chain_verify()
    assert not report.ok and report.row_id == rows[2].id and report.after_id == rows[1].id


def test_deleted_row_is_reported_as_removed():
    rows = write_events(*EventFactory.build_batch(5))
    _raw("DELETE FROM audit_auditlog WHERE id = %s", [rows[2].id])
    report = chain_verify()
    assert (report.ok, report.kind, report.row_id, report.after_id) == (False, "removed", rows[3].id, rows[1].id)


def test_deleted_last_row_is_reported_as_removed():
    rows = write_events(*EventFactory.build_batch(3))
    _raw("DELETE FROM audit_auditlog WHERE id = %s", [rows[-1].id])
    report = chain_verify()
    assert (report.ok, report.kind, report.after_id) == (False, "removed", rows[1].id)


def _forge(pk, prev_hash):
    """A row inserted behind the writer's back, hashed correctly onto its predecessor."""
    now = timezone.now()
    row = AuditLog(
        id=pk, event_id=uuid.uuid4(), occurred_at=now, recorded_at=now, action="forged", details={}, prev_hash=prev_hash
    )
    row.row_hash = compute_hash(row, prev_hash)
    AuditLog.objects.bulk_create([row])
    return row


def test_row_inserted_in_the_middle_is_reported_as_inserted():
    first = write_events(*EventFactory.build_batch(2))
    _raw("SELECT setval(pg_get_serial_sequence('audit_auditlog', 'id'), %s)", [first[-1].id + 10])
    second = write_events(*EventFactory.build_batch(2))
    forged = _forge(first[-1].id + 5, first[-1].row_hash)
    report = chain_verify()
    assert (report.ok, report.kind, report.row_id) == (False, "inserted", forged.id)
    assert second[0].id > forged.id


def test_row_inserted_with_a_bogus_hash_is_reported_as_inserted_not_altered():
    first = write_events(*EventFactory.build_batch(2))
    _raw("SELECT setval(pg_get_serial_sequence('audit_auditlog', 'id'), %s)", [first[-1].id + 10])
    write_events(*EventFactory.build_batch(2))
    forged = _forge(first[-1].id + 5, "f" * 64)
    report = chain_verify()
    assert (report.kind, report.row_id) == ("inserted", forged.id)


def test_row_appended_behind_the_writer_is_reported_as_inserted():
    rows = write_events(*EventFactory.build_batch(2))
    forged = _forge(rows[-1].id + 1, rows[-1].row_hash)
    report = chain_verify()
    assert (report.ok, report.kind, report.row_id) == (False, "inserted", forged.id)


def test_verify_api_reports_the_problem(make_api_client, staff):
    rows = write_events(*EventFactory.build_batch(3))
    client = make_api_client(staff)
    body = client.get("/api/audit-log/verify").json()
    assert body["ok"] is True and body["checked"] == 3
    _raw("UPDATE audit_auditlog SET success = false WHERE id = %s", [rows[0].id])
    body = client.get("/api/audit-log/verify").json()
    assert body["ok"] is False and body["error"] == "audit_chain_broken"
    assert body["problem"]["kind"] == "altered" and body["problem"]["rowId"] == rows[0].id


TRICKY = [
    {
        "action": 'quote " back\\slash',
        "resourceId": "tab\there",
        "actorLabel": "ünïcødé ✓ 🙂",
        "userAgent": "line\nbreak\r\n",
        "errorMessage": "\\N looks like NULL",
        "ip": "2001:db8::1",
        "details": {"z": [1, 2.5, None, True], "a": {"nested": 'tab\t\\ "q" é'}, "big": 10**20, "": "empty key"},
    },
    {"action": "plain", "actorId": 987654, "actorLabel": "gone", "success": False, "ip": "10.0.0.1", "details": {}},
]


def test_rows_with_escapes_and_unicode_are_stored_exactly_and_verify():
    from audit.chain import canonical, new_row, timestamp_text

    rows = write_events(*TRICKY)
    assert [(r.action, r.resource_id, r.actor_label, r.user_agent, r.error_message, r.details) for r in rows] == [
        (
            e["action"],
            e.get("resourceId", ""),
            e["actorLabel"],
            e.get("userAgent", ""),
            e.get("errorMessage", ""),
            e["details"],
        )
        for e in TRICKY
    ]
    assert (rows[1].actor_ref, rows[1].actor_id, rows[1].success, rows[1].ip) == (987654, None, False, "10.0.0.1")
    assert chain_verify().ok
    # The hash is built from parts; it must be the canonical JSON of the row the database gives back.
    for row in rows:
        built = new_row(
            str(row.event_id),
            timestamp_text(row.occurred_at),
            timestamp_text(row.recorded_at),
            row.actor_id,
            row.actor_ref,
            row.actor_label,
            row.action,
            row.resource_type,
            row.resource_id,
            row.details,
            row.ip,
            row.user_agent,
            row.session_id,
            row.request_id,
            row.success,
            row.error_message,
        )
        assert built.canonical == canonical(row)
        assert compute_hash(row, row.prev_hash) == row.row_hash
