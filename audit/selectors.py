"""Reads of the audit trail: filtered lists with keyset cursors, one event, stats, the chain's state."""

from __future__ import annotations

import datetime as dt
import re

from django.db.models import Count, Q, QuerySet

from audit.models import AuditLog
from slimy_site.cursors import INSTANT_PATTERN, instant_decode, instant_encode
from slimy_site.exceptions import NotFound, ValidationFailed


class AuditEventNotFound(NotFound):
    code = "audit_event_not_found"
    message = "Audit event not found."


def audit_log_filter(
    *,
    actor: int | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    success: bool | None = None,
    occurred_from: dt.datetime | None = None,
    occurred_to: dt.datetime | None = None,
    request_id: str | None = None,
) -> QuerySet[AuditLog]:
    """Events matching every given filter, newest first (`from` inclusive, `to` exclusive)."""
    qs = AuditLog.objects.all()
    if actor is not None:
        qs = qs.filter(actor_ref=actor)
    if action:
        qs = qs.filter(action=action)
    if resource_type:
        qs = qs.filter(resource_type=resource_type)
    if resource_id:
        qs = qs.filter(resource_id=resource_id)
    if success is not None:
        qs = qs.filter(success=success)
    if occurred_from is not None:
        qs = qs.filter(occurred_at__gte=occurred_from)
    if occurred_to is not None:
        qs = qs.filter(occurred_at__lt=occurred_to)
    if request_id:
        qs = qs.filter(request_id=request_id)
    return qs.order_by("-occurred_at", "-id")


# `<occurred_at as microseconds since 1970>.<id>`: every value of this form decodes (slimy_site.cursors).
CURSOR_PATTERN = rf"^{INSTANT_PATTERN}\.[0-9]{{1,18}}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(row: AuditLog) -> str:
    return f"{instant_encode(row.occurred_at)}.{row.id}"


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    if not _CURSOR.fullmatch(cursor):
        raise ValidationFailed(
            "The cursor is not valid.", details={"cursor": ["Not a cursor returned by this endpoint."]}
        )
    at, pk = cursor.split(".")
    return instant_decode(at), int(pk)


def audit_log_page(*, qs: QuerySet[AuditLog], cursor: str | None, limit: int) -> tuple[list[AuditLog], str | None]:
    """One page of `qs` (newest first) after `cursor`, and the cursor of the next page (None at the end)."""
    if cursor:
        at, pk = _decode_cursor(cursor)
        # The redundant bound lets PostgreSQL range-scan the (occurred_at, id) index.
        qs = qs.filter(occurred_at__lte=at).filter(Q(occurred_at__lt=at) | Q(id__lt=pk))
    rows = list(qs.select_related("actor")[: limit + 1])
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1])
    return rows, None


def audit_log_get(*, event_id: int) -> AuditLog:
    if not 0 < int(event_id) < 2**63:
        raise AuditEventNotFound()
    try:
        return AuditLog.objects.select_related("actor").get(pk=event_id)
    except (AuditLog.DoesNotExist, ValueError, TypeError):
        raise AuditEventNotFound() from None


def audit_stats(*, occurred_from: dt.datetime | None = None, occurred_to: dt.datetime | None = None) -> dict:
    qs = audit_log_filter(occurred_from=occurred_from, occurred_to=occurred_to).order_by()
    totals = qs.aggregate(total=Count("id"), failed=Count("id", filter=Q(success=False)))
    total, failed = totals["total"], totals["failed"]
    by_action = [
        {"action": row["action"], "count": row["n"], "failed": row["failed"]}
        for row in qs.values("action")
        .annotate(n=Count("id"), failed=Count("id", filter=Q(success=False)))
        .order_by("-n", "action")
    ]
    return {
        "total": total,
        "succeeded": total - failed,
        "failed": failed,
        "successRate": round((total - failed) / total, 4) if total else None,
        "byAction": by_action,
    }


def audit_chain_state():
    """Verify the chain and publish the outcome as `slimy_audit_chain_ok` (alerts watch it)."""
    from audit.chain import chain_verify
    from audit.metrics import AUDIT_CHAIN_OK

    report = chain_verify()
    AUDIT_CHAIN_OK.set(1 if report.ok else 0)
    return report
