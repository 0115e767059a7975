"""Writes of the audit trail: recording events (never failing the caller), bulk and grouped appends.

Retention lives in audit.retention, reports in audit.reports, the chain in audit.chain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid

from django.contrib.auth import get_user_model
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from redis.exceptions import RedisError
from rest_framework import serializers

from audit.chain import chain_append
from audit.events import MAX_EVENTS, EventPayload
from audit.models import AuditLog
from queues.constants import JobStatus
from queues.logging import current_request_id
from queues.metrics import AUDIT_EVENTS_FAILED, AUDIT_EVENTS_WRITTEN
from slimy_site.exceptions import ApplicationError

logger = logging.getLogger(__name__)

LOG_EVENT = "log_event"
LOG_EVENTS_BULK = "log_events_bulk"
# How many waiting log_event jobs one run may take over and write with its own event.
GROUP_MAX = MAX_EVENTS


def _session_ref(request) -> str:
    """A stable reference to the browser session that is not the session key itself (a credential)."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None) if session is not None else None
    return hashlib.sha256(key.encode()).hexdigest()[:32] if key else ""


def _from_request(request) -> dict:
    meta = getattr(request, "META", {}) or {}
    return {
        "ip": meta.get("REMOTE_ADDR") or None,
        "userAgent": meta.get("HTTP_USER_AGENT", ""),
        "sessionId": _session_ref(request),
        "requestId": getattr(request, "request_id", "") or "",
    }


def audit_event_record(
    *,
    action: str,
    resource_type: str = "",
    resource_id: str = "",
    actor=None,
    details: dict | None = None,
    success: bool = True,
    error_message: str = "",
    request=None,
    request_id: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    session_id: str | None = None,
) -> None:
    """Record an audit event off the request path: enqueue a `log_event` job, never raise.

    The job record joins the caller's transaction (inside a savepoint) and is pushed when it commits,
    so an event about a rolled-back change disappears with it. Details are redacted before they are
    enqueued. A failure to enqueue is logged and counted, never raised into the caller.
    """
    from queues.services import job_enqueue

    context = _from_request(request) if request is not None else {}
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        actor = user if user is not None and user.is_authenticated else None
    event = {
        "eventId": str(uuid.uuid4()),
        "occurredAt": timezone.now().isoformat(),
        "action": action,
        "resourceType": str(resource_type or ""),
        "resourceId": str(resource_id or ""),
        "actorId": actor.pk if actor is not None and getattr(actor, "pk", None) else None,
        "actorLabel": actor.get_username() if actor is not None and getattr(actor, "pk", None) else "",
        "details": details or {},
        "ip": ip if ip is not None else context.get("ip"),
        "userAgent": user_agent if user_agent is not None else context.get("userAgent", ""),
        "sessionId": session_id if session_id is not None else context.get("sessionId", ""),
        "requestId": request_id if request_id is not None else (context.get("requestId") or current_request_id()),
        "success": bool(success),
        "errorMessage": error_message or "",
    }
    try:
        if event["ip"]:
            try:
                EventPayload().validate_ip(event["ip"])
            except serializers.ValidationError:
                event["ip"] = None  # a proxy's odd REMOTE_ADDR must not cost the event
        with transaction.atomic():
            job_enqueue(job_type=LOG_EVENT, payload=event, request_id=event["requestId"])
    except (RedisError, OSError, DatabaseError, ApplicationError) as exc:
        AUDIT_EVENTS_FAILED.labels(stage="enqueue").inc()
        logger.warning("audit event %s (%s) could not be enqueued: %s", action, event["eventId"], exc,
                       exc_info=not isinstance(exc, ApplicationError))


# --- Writing


def _row(event: dict, *, now: dt.datetime, known_users: dict[int, object]) -> AuditLog:
    occurred = event["occurredAt"]
    if isinstance(occurred, str):
        occurred = parse_datetime(occurred)
    actor_id = event.get("actorId")
    return AuditLog(
        event_id=uuid.UUID(str(event["eventId"])),
        occurred_at=occurred,
        recorded_at=now,
        actor=known_users.get(actor_id),
        actor_ref=actor_id,
        actor_label=event.get("actorLabel") or getattr(known_users.get(actor_id), "username", "") or "",
        action=event["action"],
        resource_type=event.get("resourceType", ""),
        resource_id=event.get("resourceId", ""),
        details=event.get("details") or {},
        ip=event.get("ip") or None,
        user_agent=event.get("userAgent", ""),
        session_id=event.get("sessionId", ""),
        request_id=event.get("requestId", ""),
        success=bool(event.get("success", True)),
        error_message=event.get("errorMessage", ""),
    )


def audit_events_write(*, events: list[dict]) -> int:
    """Append validated events (job payload form) to the chain in one bulk statement; returns rows written.

    An event whose id is already stored is skipped, so retries never double. An actor deleted since
    the event was enqueued keeps its id in `actor_ref`.
    """
    if not events:
        return 0
    # Microsecond-exact "now" as the database will give it back.
    now = timezone.now()
    actor_ids = {e["actorId"] for e in events if e.get("actorId")}
    known = {u.pk: u for u in get_user_model().objects.filter(pk__in=actor_ids).only("pk", "username")}
    rows = [_row(event, now=now, known_users=known) for event in events]
    written = chain_append(rows)
    if written:
        count = len(written)
        transaction.on_commit(lambda: AUDIT_EVENTS_WRITTEN.inc(count))
    return len(written)


def audit_log_event_run(*, event: dict, job_id: str | None = None, worker_name: str = "",
                        group_max: int = GROUP_MAX) -> dict:
    """Run one log_event job, taking over other waiting log_event jobs so they are written together.

    In one transaction: claim up to `group_max - 1` queued log_event records (FOR UPDATE SKIP LOCKED,
    so concurrent workers take disjoint sets), append all their events with one bulk insert, and mark
    the claimed records completed. Their RQ deliveries then find them finished and skip them. If
    anything fails, everything rolls back and the claimed jobs run on their own.
    """
    from queues.definitions import registry
    from queues.models import JobRecord
    from queues.services import job_complete_many

    definition = registry.get(LOG_EVENT)
    with transaction.atomic():
        claimed_events, claimed_ids = [], []
        if group_max > 1:
            now = timezone.now()
            waiting = (
                JobRecord.objects.select_for_update(skip_locked=True)
                .filter(job_type=LOG_EVENT, status=JobStatus.QUEUED)
                .filter(Q(scheduled_for__isnull=True) | Q(scheduled_for__lte=now))
                .exclude(pk=job_id)
                .order_by("created_at")
                .values_list("pk", "payload")[: group_max - 1]
            )
            for pk, payload in waiting:
                try:
                    claimed_events.append(definition.validate(payload))
                except serializers.ValidationError:
                    continue  # left waiting: its own run fails it permanently with the reason
                claimed_ids.append(pk)
        written = audit_events_write(events=[event, *claimed_events])
        if claimed_ids:
            job_complete_many(job_ids=claimed_ids, result={"groupedInto": str(job_id)}, worker_name=worker_name)
    return {"written": written, "grouped": len(claimed_ids)}


def audit_events_bulk_run(*, events: list[dict]) -> dict:
    with transaction.atomic():
        written = audit_events_write(events=events)
    return {"received": len(events), "written": written, "duplicates": len(events) - written}
