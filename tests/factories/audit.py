"""Audit events as producers send them, and a helper that writes them through the real chain."""

import factory
from django.db import transaction

from audit.jobs import LogEventJob
from audit.models import AuditLog


class EventFactory(factory.DictFactory):
    action = factory.Iterator(["user.login", "job.retry", "chat.message"])
    resourceType = "job"
    resourceId = factory.Sequence(lambda n: f"res-{n}")
    success = True


def write_events(*events: dict) -> list[AuditLog]:
    """Validate like a job payload and append to the chain; returns the stored rows in id order."""
    from audit.services import audit_events_write

    clean = [LogEventJob.validate(dict(event)) for event in events]
    with transaction.atomic():
        audit_events_write(events=clean)
    return list(AuditLog.objects.filter(event_id__in=[c["eventId"] for c in clean]).order_by("id"))
