"""Reads of the audit trail: filtered lists with keyset cursors, one event, stats, the chain's state."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json

from django.db.models import Count, Q, QuerySet
from django.utils.dateparse import parse_datetime

from audit.models import AuditLog
from slimy_site.exceptions import NotFound, ValidationFailed


class AuditEventNotFound(NotFound):
    code = "audit_event_not_found"
    message = "Audit event not found."


def audit_log_filter(*, actor: int | None = None, action: str | None = None, resource_type: str | None = None,
                     resource_id: str | None = None, success: bool | None = None, occurred_from: dt.datetime | None = None,
                     occurred_to: dt.datetime | None = None, request_id: str | None = None) -> QuerySet[AuditLog]:
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


def encode_cursor(row: AuditLog) -> str:
    raw = json.dumps([row.occurred_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, pk = json.loads(raw)
        when = parse_datetime(at)
        if when is None or not isinstance(pk, int):
            raise ValueError
        return when, pk
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("The cursor is not valid.", code="invalid_cursor",
                               details={"cursor": ["Not a cursor returned by this endpoint."]}) from None


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
        for row in qs.values("action").annotate(n=Count("id"), failed=Count("id", filter=Q(success=False)))
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
    from queues.metrics import AUDIT_CHAIN_OK

    report = chain_verify()
    AUDIT_CHAIN_OK.set(1 if report.ok else 0)
    return report
