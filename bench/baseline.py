"""Plain-RQ job functions for the baselines (no Django, no ledger)."""

import time


def noop():
    return None


def stamp(key: str, seq: int):
    """Record when the handler started (pickup baseline)."""
    from rq import get_current_job

    get_current_job().connection.rpush(key, f"{seq}:{time.time()}")


def audit_create(event: dict):
    """The original design: one RQ job per audit event, one `.create()` each (needs Django set up)."""
    from django.utils.dateparse import parse_datetime

    from audit.models import AuditLog

    AuditLog.objects.create(
        event_id=event["eventId"],
        occurred_at=parse_datetime(event["occurredAt"]),
        recorded_at=parse_datetime(event["occurredAt"]),
        action=event["action"],
        resource_type=event["resourceType"],
        resource_id=event["resourceId"],
        details=event["details"],
        prev_hash="",
        row_hash="",
    )
