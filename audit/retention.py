"""Retention: delete events older than AUDIT_RETENTION_DAYS (except AUDIT_RETENTION_KEEP_ACTIONS)
without breaking verification, and the daily schedule of that clean-up.

Each removed run of rows between two surviving rows leaves an AuditChainGap checkpoint: the surviving
row before the run and the hash of the last row removed. The verifier accepts exactly those gaps, so a
row removed any other way is still reported. Work is done in batches, each one transaction holding
the chain lock (appends wait for at most one batch).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from audit.chain import lock_head
from audit.models import AuditChainGap, AuditLog
from queues.constants import WAITING_STATUSES

logger = logging.getLogger(__name__)

AUDIT_CLEANUP = "audit_cleanup"
BATCH = 2000


@dataclass
class CleanupReport:
    cutoff: dt.datetime
    deleted: int = 0
    batches: int = 0

    def as_dict(self) -> dict:
        return {"cutoff": self.cutoff.isoformat(), "deleted": self.deleted, "batches": self.batches}


def audit_cleanup(
    *,
    retention_days: int | None = None,
    keep_actions: list[str] | None = None,
    now: dt.datetime | None = None,
    batch: int = BATCH,
) -> CleanupReport:
    days = settings.AUDIT_RETENTION_DAYS if retention_days is None else retention_days
    keep = list(settings.AUDIT_RETENTION_KEEP_ACTIONS if keep_actions is None else keep_actions)
    report = CleanupReport(cutoff=(now or timezone.now()) - dt.timedelta(days=days))
    after = 0
    while True:
        removed, after = _delete_batch(cutoff=report.cutoff, keep=keep, after=after, batch=batch)
        if not removed:
            break
        report.deleted += removed
        report.batches += 1
    logger.info("audit clean-up removed %s event(s) older than %s", report.deleted, report.cutoff.isoformat())
    return report


def _delete_batch(*, cutoff, keep, after: int, batch: int) -> tuple[int, int]:
    with transaction.atomic():
        lock_head()
        doomed = list(
            AuditLog.objects.filter(id__gt=after, occurred_at__lt=cutoff)
            .exclude(action__in=keep)
            .order_by("id")
            .values_list("id", "row_hash")[:batch]
        )
        if not doomed:
            return 0, after
        hashes = dict(doomed)
        ids = [pk for pk, _ in doomed]
        lo, hi = ids[0], ids[-1]
        survivors = set(AuditLog.objects.filter(id__gt=lo, id__lt=hi).exclude(id__in=ids).values_list("id", flat=True))
        before = AuditLog.objects.filter(id__lt=lo).aggregate(m=Max("id"))["m"] or 0
        # Group the removed rows by the surviving row that precedes them.
        groups: dict[int, list[int]] = {}
        current = before
        for pk in sorted(hashes.keys() | survivors):
            if pk in survivors:
                current = pk
            else:
                groups.setdefault(current, []).append(pk)
        AuditLog.objects.filter(id__in=ids).delete()
        _record_gaps(groups, hashes)
    return len(ids), hi


def _record_gaps(groups: dict[int, list[int]], hashes: dict[int, str]) -> None:
    removed = {pk for pks in groups.values() for pk in pks}
    older = {gap.after_id: gap for gap in AuditChainGap.objects.filter(after_id__in=removed | set(groups))}
    merged_ids, fresh = [], []
    for after_id, pks in groups.items():
        # Earlier gaps that now join this one: the one after the same survivor, and any after a removed row.
        joined = [older[k] for k in [after_id, *pks] if k in older]
        merged_ids += [gap.pk for gap in joined]
        last_id, last_hash = max([(pks[-1], hashes[pks[-1]])] + [(g.last_deleted_id, g.last_hash) for g in joined])
        fresh.append(
            AuditChainGap(
                after_id=after_id,
                first_deleted_id=min([pks[0]] + [g.first_deleted_id for g in joined]),
                last_deleted_id=last_id,
                last_hash=last_hash,
                deleted_count=len(pks) + sum(g.deleted_count for g in joined),
            )
        )
    AuditChainGap.objects.filter(pk__in=merged_ids).delete()
    AuditChainGap.objects.bulk_create(fresh)


# --- Daily schedule


def _next_run(now: dt.datetime) -> dt.datetime:
    hour = settings.AUDIT_CLEANUP_HOUR
    due = now.astimezone(dt.UTC).replace(hour=hour, minute=0, second=0, microsecond=0)
    return due if due > now else due + dt.timedelta(days=1)


def audit_cleanup_schedule_next(*, now: dt.datetime | None = None):
    """Make sure one scheduled audit_cleanup job waits for the next daily run (AUDIT_CLEANUP_HOUR, UTC).

    Idempotent: returns the waiting job if there is one, else enqueues it. The scheduled job schedules
    its successor when it runs, so calling this once (e.g. at start-up) keeps clean-up daily.
    """
    from queues.models import JobRecord
    from queues.services import job_enqueue

    now = now or timezone.now()
    with transaction.atomic():
        lock_head()  # serializes concurrent schedulers (cheap: no audit write waits long)
        waiting = (
            JobRecord.objects.filter(job_type=AUDIT_CLEANUP, status__in=WAITING_STATUSES, payload__scheduled=True)
            .order_by("scheduled_for")
            .first()
        )
        if waiting is not None:
            return waiting
        return job_enqueue(job_type=AUDIT_CLEANUP, payload={"scheduled": True}, run_at=_next_run(now))


def audit_cleanup_run(*, retention_days: int | None = None, scheduled: bool = False) -> dict:
    """The audit_cleanup job: clean up, then (for the daily run) schedule tomorrow's."""
    report = audit_cleanup(retention_days=retention_days)
    result = report.as_dict()
    if scheduled:
        result["nextJobId"] = str(audit_cleanup_schedule_next().pk)
    return result
