"""Retention: old events go, kept actions stay, verification keeps working (and keeps catching tampering)."""

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from audit.chain import chain_verify
from audit.models import AuditChainGap, AuditLog
from audit.retention import audit_cleanup, audit_cleanup_schedule_next
from queues.models import JobRecord
from tests.factories.audit import EventFactory, write_events

NOW = timezone.now()


def _event(days_ago, action="page.view"):
    return EventFactory(action=action, occurredAt=(NOW - dt.timedelta(days=days_ago)).isoformat())


def _layout():
    """old, old(kept), old, new, old, old, new, old(kept) — in id order."""
    spec = [
        (400, "page.view"),
        (400, "user.delete"),
        (399, "page.view"),
        (1, "page.view"),
        (380, "page.view"),
        (370, "page.view"),
        (2, "page.view"),
        (366, "user.delete"),
    ]
    return write_events(*[_event(days, action) for days, action in spec])


@pytest.mark.django_db
@override_settings(AUDIT_RETENTION_DAYS=365, AUDIT_RETENTION_KEEP_ACTIONS=["user.delete"])
def test_cleanup_removes_old_rows_except_kept_actions_and_verification_still_passes():
    rows = _layout()
    report = audit_cleanup(now=NOW)
    assert report.deleted == 4
    survivors = list(AuditLog.objects.order_by("id").values_list("id", flat=True))
    assert survivors == [rows[i].id for i in (1, 3, 6, 7)]
    gaps = {g.after_id: (g.first_deleted_id, g.last_deleted_id, g.deleted_count) for g in AuditChainGap.objects.all()}
    assert gaps == {
        0: (rows[0].id, rows[0].id, 1),
        rows[1].id: (rows[2].id, rows[2].id, 1),
        rows[3].id: (rows[4].id, rows[5].id, 2),
    }
    assert chain_verify().ok
    # The chain goes on after a clean-up.
    write_events(*EventFactory.build_batch(2))
    assert chain_verify().ok


@pytest.mark.django_db
@override_settings(AUDIT_RETENTION_KEEP_ACTIONS=["user.delete"])
def test_after_cleanup_a_removed_survivor_is_still_detected():
    rows = _layout()
    audit_cleanup(now=NOW, batch=2)  # small batches: gaps are merged across batches
    assert chain_verify().ok
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditlog WHERE id = %s", [rows[3].id])
    report = chain_verify()
    assert (report.ok, report.kind, report.after_id, report.row_id) == (False, "removed", rows[1].id, rows[6].id)


@pytest.mark.django_db
def test_repeated_cleanups_merge_checkpoints_and_the_end_of_the_chain_can_go():
    rows = write_events(*[_event(d) for d in (500, 10, 400, 5)])
    audit_cleanup(now=NOW, retention_days=365)
    assert chain_verify().ok and AuditChainGap.objects.count() == 2
    audit_cleanup(now=NOW + dt.timedelta(days=364), retention_days=365)  # now rows[1] and rows[3] are old too
    assert not AuditLog.objects.exists()
    gap = AuditChainGap.objects.get()
    assert (gap.after_id, gap.first_deleted_id, gap.last_deleted_id, gap.deleted_count) == (
        0,
        rows[0].id,
        rows[3].id,
        4,
    )
    assert chain_verify().ok
    write_events(_event(0))
    assert chain_verify().ok


@pytest.mark.django_db
def test_cleanup_command_reports_rows_removed():
    write_events(_event(400), _event(1))
    out = io.StringIO()
    call_command("audit_cleanup", stdout=out)
    assert out.getvalue().startswith("removed 1 audit event(s)")
    assert AuditLog.objects.count() == 1 and chain_verify().ok


@pytest.mark.django_db(transaction=True)
def test_on_demand_cleanup_job_reports_its_count(run_worker):
    from queues.services import job_enqueue

    write_events(_event(40), _event(20), _event(1))
    job = job_enqueue(job_type="audit_cleanup", payload={"retentionDays": 30})
    run_worker(["audit"])
    job.refresh_from_db()
    assert job.status == "completed" and job.result["deleted"] == 1
    assert AuditLog.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@override_settings(AUDIT_CLEANUP_HOUR=3)
def test_daily_schedule_is_idempotent_and_each_run_schedules_the_next(run_worker):
    noon = timezone.now().astimezone(dt.UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    first = audit_cleanup_schedule_next(now=noon)
    again = audit_cleanup_schedule_next()
    assert again.pk == first.pk and JobRecord.objects.filter(job_type="audit_cleanup").count() == 1
    assert first.status == "scheduled" and first.scheduled_for == noon + dt.timedelta(hours=15)
    # Make it due now and run it: it cleans up and leaves the next daily job waiting.
    JobRecord.objects.filter(pk=first.pk).update(status="queued", scheduled_for=None)
    from queues.services import job_push

    job_push(job=JobRecord.objects.get(pk=first.pk))
    run_worker(["audit"], with_scheduler=False)
    first.refresh_from_db()
    assert first.status == "completed"
    nxt = JobRecord.objects.get(job_type="audit_cleanup", status="scheduled")
    assert first.result["nextJobId"] == str(nxt.pk) and nxt.scheduled_for > timezone.now()
    assert nxt.scheduled_for.hour == 3 and nxt.payload == {"scheduled": True}
    with transaction.atomic():
        out = io.StringIO()
        call_command("audit_cleanup", "--schedule", stdout=out)
    assert str(nxt.pk) in out.getvalue()
