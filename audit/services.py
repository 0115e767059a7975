"""Writes of the audit trail: recording events (never failing the caller), bulk and grouped appends.

Retention lives in audit.retention, reports in audit.reports, the chain in audit.chain.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import hashlib
import json
import logging
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework import serializers

from audit.chain import chain_append, new_row, timestamp_text
from audit.events import MAX_EVENTS, event_clean, normalize_ip
from audit.metrics import AUDIT_EVENTS_FAILED, AUDIT_EVENTS_WRITTEN
from audit.models import AuditStagedEvent
from queues.connections import get_connection
from queues.definitions import registry
from queues.logs import current_request_id
from queues.selectors import job_waiting_exists
from queues.services import job_complete_waiting, job_enqueue, job_waiting_claim
from slimy_site.exceptions import ApplicationError

logger = logging.getLogger(__name__)

LOG_EVENT = "log_event"
LOG_EVENTS_BULK = "log_events_bulk"
AUDIT_DRAIN = "audit_drain"
# "A drain job is queued" (see audit_drain_request); expires so a lost job is replaced soon.
DRAIN_FLAG = "slimy:audit:drain-requested"
DRAIN_FLAG_TTL = 10
# Events per drain transaction, and transactions per drain job before it hands over to a successor.
DRAIN_BATCH = 5000
DRAIN_MAX_BATCHES = 20
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
    """Record an audit event off the request path: stage it in the ingest buffer, never raise.

    The event is validated and redacted here, then written to `AuditStagedEvent` in the caller's
    transaction (inside a savepoint), so an event about a rolled-back change disappears with it.
    When the caller commits, an `audit_drain` job is asked for (see `audit_drain_request`), which
    moves the buffer into the chain in large batches. A failure is logged and counted, never raised.
    """
    context = _from_request(request) if request is not None else {}
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        actor = user if user is not None and user.is_authenticated else None
    known_actor = actor is not None and getattr(actor, "pk", None)
    event: dict[str, Any] = {
        "action": action,
        "resourceType": str(resource_type or ""),
        "resourceId": str(resource_id or ""),
        "actorId": actor.pk if known_actor else None,
        "actorLabel": actor.get_username() if known_actor else "",
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
                normalize_ip(event["ip"])
            except ValueError:
                event["ip"] = None  # a proxy's odd REMOTE_ADDR must not cost the event
        cleaned = event_clean(event)
        batch = _batch.get()
        if batch is not None:
            batch.append(cleaned)  # staged with the others when the batch ends
            return
        audit_event_stage(events=[cleaned])
    except (serializers.ValidationError, DatabaseError) as exc:
        AUDIT_EVENTS_FAILED.labels(stage="enqueue").inc()
        logger.warning("audit event %s could not be recorded: %s", action, exc, exc_info=isinstance(exc, DatabaseError))


_batch: contextvars.ContextVar[list | None] = contextvars.ContextVar("slimy_audit_batch", default=None)


@contextlib.contextmanager
def audit_events_batched():
    """Events recorded inside (`audit_event_record`) are staged together when the block ends without an
    error: one statement, one savepoint and one drain request instead of one each. For a writer that
    records several events in one transaction (the chat reply): open it inside that transaction, and
    record each event after the write it describes, last in any savepoint that may roll back. Nested
    batches join the outermost one."""
    if _batch.get() is not None:
        yield
        return
    events: list[dict] = []
    token = _batch.set(events)
    try:
        yield
    finally:
        _batch.reset(token)
    if not events:
        return
    try:
        audit_event_stage(events=events)
    except DatabaseError as exc:
        AUDIT_EVENTS_FAILED.labels(stage="enqueue").inc(len(events))
        logger.warning("%s audit event(s) could not be recorded: %s", len(events), exc, exc_info=True)


def audit_event_stage(*, events: list[dict]) -> None:
    """Put validated events (log_event payload form) in the ingest buffer, in the caller's transaction.

    One statement. Inside a transaction it runs in a savepoint, so a failure leaves the caller's
    transaction usable. The drain is requested when the transaction commits.
    """
    sql = "INSERT INTO audit_auditstagedevent (event, created_at) VALUES " + ", ".join(["(%s, %s)"] * len(events))
    now = timezone.now()
    params = [p for event in events for p in (json.dumps(event, ensure_ascii=False), now)]
    conn = transaction.get_connection()
    with transaction.atomic() if conn.in_atomic_block else contextlib.nullcontext():
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
    transaction.on_commit(audit_drain_request)


# --- The drain: the buffer into the chain


def audit_drain_request() -> None:
    """Make sure an `audit_drain` job will run, without enqueueing one per event.

    A Redis flag (SET NX with a TTL) stands for "a drain is queued": the first event after a drain
    started enqueues the next one; the rest see the flag and do nothing. The drain clears the flag
    before it reads the buffer, so an event committed while it runs asks for another. If Redis or the
    database fails here, the event stays in the buffer and the periodic safety net
    (`audit_drain_ensure`) or the next event's request picks it up. Never raises.
    """
    try:
        conn = get_connection()
        if not conn.set(DRAIN_FLAG, "1", nx=True, ex=DRAIN_FLAG_TTL):
            return
    except (RedisError, OSError):
        logger.warning("audit drain not requested (Redis unavailable); the periodic safety net will drain")
        return
    try:
        with transaction.atomic():
            job_enqueue(job_type=AUDIT_DRAIN, payload={})
    except (DatabaseError, ApplicationError, RedisError, OSError):
        logger.warning("audit drain could not be enqueued; the periodic safety net will drain", exc_info=True)
        try:
            conn.delete(DRAIN_FLAG)
        except (RedisError, OSError):
            pass


def audit_drain_ensure() -> bool:
    """The periodic safety net (a PERIODIC_HOOKS entry): enqueue a drain when events wait in the buffer
    and no drain job is waiting. Idempotent; returns whether it enqueued one."""
    if not AuditStagedEvent.objects.exists():
        return False
    with transaction.atomic():
        if job_waiting_exists(job_type=AUDIT_DRAIN):
            return False
        job_enqueue(job_type=AUDIT_DRAIN, payload={})
    return True


def audit_staged_drain(*, batch: int = DRAIN_BATCH, max_batches: int = DRAIN_MAX_BATCHES) -> dict:
    """The audit_drain job: move the buffer into the chain, `batch` events per transaction.

    Each batch takes its buffer rows (one `DELETE … RETURNING` of rows locked FOR UPDATE SKIP LOCKED:
    concurrent drains take disjoint rows) and appends them to the chain, in one transaction: a drain
    killed mid-batch rolls its delete back and leaves its rows in the buffer for the next one, and an
    event id already in the chain is skipped, so nothing is lost or doubled. After its first full batch
    it asks for a companion drain (see below); after `max_batches` full batches it requests a successor
    rather than hold its slot.
    """
    try:
        get_connection().delete(DRAIN_FLAG)
    except (RedisError, OSError):
        pass  # the flag expires by itself; meanwhile this drain and the safety net cover
    written = drained = batches = 0
    more = False
    while True:
        if batches >= max_batches:
            more = True
            break
        with transaction.atomic():
            _commit_without_flush_wait()
            events = _staged_take(batch)
            if not events:
                break
            written += audit_events_write(events=events)
        drained += len(events)
        batches += 1
        if len(events) < batch:
            break
        if batches == 1:
            # More waits than one batch: ask for a companion drain. On the audit queue's other slot it takes
            # the next batch and prepares it while this drain's COPY runs (the chain lock orders the appends).
            audit_drain_request()
    if more:
        audit_drain_request()
    return {"drained": drained, "written": written, "duplicates": drained - written, "batches": batches}


def _commit_without_flush_wait() -> None:
    """This transaction's commit does not wait for the WAL flush (PostgreSQL).

    For transactions that only move events already durable elsewhere (from the buffer, or from a job
    payload, into the chain): if the server crashed before the flush, the whole transaction is lost
    together — the events are back in the buffer, or the job is still `started` and runs again (its
    completion is a later, synchronous commit, which flushes this one first). Never partly applied.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


_TAKE_SQL = (
    "DELETE FROM audit_auditstagedevent WHERE id IN ("
    " SELECT id FROM audit_auditstagedevent ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"
    ") RETURNING id, event"
)


def _staged_take(batch: int) -> list[dict]:
    """Up to `batch` buffered events, oldest first, deleted in the caller's transaction."""
    if connection.vendor != "postgresql":
        rows = list(AuditStagedEvent.objects.order_by("id").values_list("id", "event")[:batch])
        AuditStagedEvent.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
        return [event for _, event in rows]
    with connection.cursor() as cursor:
        cursor.execute(_TAKE_SQL, [batch])
        rows = cursor.fetchall()
    rows.sort()  # RETURNING has no order; the chain keeps the order recorded
    loads = json.loads
    # jsonb arrives as text (Django's loader for JSONField).
    return [loads(event) if event.__class__ is str else event for _, event in rows]


# --- Writing


def _parse_occurred(value) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    # Payload timestamps are ISO 8601 with `Z` (audit.events.iso); fromisoformat takes `+00:00`.
    return dt.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)


def _occurred_text(value) -> str:
    """A payload's occurredAt as the chain's timestamp text. Payloads carry audit.events.iso's form
    (`2026-01-02T03:04:05.678Z`, or without the fraction), rewritten here without parsing; anything
    else (and what PostgreSQL would read differently from Python: hour 24, second 60) is parsed."""
    if (
        value.__class__ is str
        and value[-1:] == "Z"
        and value[10:11] == "T"
        and value[11:13] < "24"
        and value[17:18] < "6"
    ):
        if len(value) == 24 and value[19] == ".":
            return value[:23] + "000+00:00"
        if len(value) == 20:
            return value[:19] + ".000000+00:00"
    return timestamp_text(_parse_occurred(value))


def audit_events_write(*, events: list[dict]) -> int:
    """Append validated events (job payload form) to the chain in one COPY; returns rows written.

    An event whose id is already stored is skipped, so retries never double. An actor deleted since
    the event was recorded keeps its id in `actor_ref`. The rows are prepared (canonical JSON, COPY text)
    before the chain is locked; see audit.chain.
    """
    if not events:
        return 0
    recorded = timestamp_text(timezone.now())
    actor_ids = {e["actorId"] for e in events if e.get("actorId")}
    known: dict[Any, str] = (
        dict(get_user_model().objects.filter(pk__in=actor_ids).values_list("pk", "username")) if actor_ids else {}
    )
    rows: list = []
    append = rows.append
    for event in events:
        get = event.get
        actor_id = get("actorId")
        event_id = event["eventId"]
        append(
            new_row(
                event_id if event_id.__class__ is str else str(uuid.UUID(str(event_id))),
                _occurred_text(event["occurredAt"]),
                recorded,
                actor_id if actor_id in known else None,
                actor_id,
                get("actorLabel") or known.get(actor_id, "") or "",
                event["action"],
                get("resourceType", ""),
                get("resourceId", ""),
                get("details") or {},
                get("ip") or None,
                get("userAgent", ""),
                get("sessionId", ""),
                get("requestId", ""),
                bool(get("success", True)),
                get("errorMessage", ""),
            )
        )
    written = chain_append(rows)
    if written:
        count = len(written)
        transaction.on_commit(lambda: AUDIT_EVENTS_WRITTEN.inc(count))
    return len(written)


def audit_log_event_run(
    *, event: dict, job_id: str | None = None, worker_name: str = "", group_max: int = GROUP_MAX
) -> dict:
    """Run one log_event job, taking over other waiting log_event jobs so they are written together.

    In one transaction: claim up to `group_max - 1` queued log_event records (FOR UPDATE SKIP LOCKED,
    so concurrent workers take disjoint sets), append all their events with one bulk insert, and mark
    the claimed records completed. Their RQ deliveries then find them finished and skip them. If
    anything fails, everything rolls back and the claimed jobs run on their own.
    """
    definition = registry.get(LOG_EVENT)
    assert definition is not None  # audit.jobs registers it, and the app's job modules are loaded first
    with transaction.atomic():
        claimed_events, claimed_ids = [], []
        if group_max > 1:
            waiting = job_waiting_claim(job_type=LOG_EVENT, limit=group_max - 1, exclude_id=job_id)
            for pk, payload in waiting:
                try:
                    claimed_events.append(definition.validate_stored(payload))
                except serializers.ValidationError:
                    continue  # left waiting: its own run fails it permanently with the reason
                claimed_ids.append(pk)
        written = audit_events_write(events=[event, *claimed_events])
        if claimed_ids:
            job_complete_waiting(job_ids=claimed_ids, result={"groupedInto": str(job_id)}, worker_name=worker_name)
    return {"written": written, "grouped": len(claimed_ids)}


def audit_events_bulk_run(*, events: list[dict]) -> dict:
    with transaction.atomic():
        _commit_without_flush_wait()  # the events stay in the job's payload until its completion commits
        written = audit_events_write(events=events)
    return {"received": len(events), "written": written, "duplicates": len(events) - written}
