"""The hash chain: canonical row content, serialized appends, and the verifier.

row_hash = sha256(canonical JSON of the row's content + prev_hash); prev_hash is the row_hash of the
row before it in id order (GENESIS_HASH for the first). Appends lock the one AuditChainHead row, so
ids and hashes are assigned in one order however many audit workers write at once (PostgreSQL:
SELECT ... FOR UPDATE; SQLite: its single writer). The chain content excludes the live actor FK (it
becomes NULL when a user is deleted) and the row id (assigned by the database after hashing).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from dataclasses import dataclass

from django.db import connection, transaction

from audit.models import GENESIS_HASH, AuditChainGap, AuditChainHead, AuditLog
from slimy_site.exceptions import ApplicationError


class ChainWriteError(ApplicationError):
    code = "audit_chain_write_failed"
    status = 503
    message = "The audit chain could not be extended consistently."


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds")


def canonical_json(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(row: AuditLog) -> str:
    return canonical_json({
        "eventId": str(row.event_id),
        "occurredAt": _iso(row.occurred_at),
        "recordedAt": _iso(row.recorded_at),
        "actorRef": row.actor_ref,
        "actorLabel": row.actor_label,
        "action": row.action,
        "resourceType": row.resource_type,
        "resourceId": row.resource_id,
        "details": row.details,
        "ip": row.ip,
        "userAgent": row.user_agent,
        "sessionId": row.session_id,
        "requestId": row.request_id,
        "success": bool(row.success),
        "errorMessage": row.error_message,
    })


def _hash(text: str, prev_hash: str) -> str:
    return hashlib.sha256((text + "\n" + prev_hash).encode("utf-8", "surrogatepass")).hexdigest()


def compute_hash(row: AuditLog, prev_hash: str) -> str:
    return _hash(canonical(row), prev_hash)


def lock_head() -> AuditChainHead:
    """The chain head, locked until the surrounding transaction ends (created on first use)."""
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        AuditChainHead.objects.bulk_create([AuditChainHead(pk=1)], ignore_conflicts=True)
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


@dataclass
class NewRow:
    """One row to append, as plain values (no model instance: appends run at tens of thousands/s)."""

    event_id: uuid.UUID
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    actor_id: int | None  # the live FK: None when the user no longer exists
    actor_ref: int | None
    actor_label: str
    action: str
    resource_type: str
    resource_id: str
    details: dict
    ip: str | None
    user_agent: str
    session_id: str
    request_id: str
    success: bool
    error_message: str
    id: int | None = None
    prev_hash: str = ""
    row_hash: str = ""

    def content(self) -> dict:
        return {
            "eventId": str(self.event_id), "occurredAt": _iso(self.occurred_at), "recordedAt": _iso(self.recorded_at),
            "actorRef": self.actor_ref, "actorLabel": self.actor_label, "action": self.action,
            "resourceType": self.resource_type, "resourceId": self.resource_id, "details": self.details,
            "ip": self.ip, "userAgent": self.user_agent, "sessionId": self.session_id, "requestId": self.request_id,
            "success": bool(self.success), "errorMessage": self.error_message,
        }

    def canonical(self, details_json: str, occurred: str, recorded: str) -> str:
        """`canonical_json(self.content())`, assembled from parts (the details serialized once, for the
        hash and the COPY alike): top-level keys in sorted order, strings encoded as json.dumps does.
        tests/audit/test_chain.py checks both give the same text."""
        q = _quote
        return (
            '{"action":' + q(self.action) + ',"actorLabel":' + q(self.actor_label)
            + ',"actorRef":' + ("null" if self.actor_ref is None else str(int(self.actor_ref)))
            + ',"details":' + details_json + ',"errorMessage":' + q(self.error_message)
            + ',"eventId":"' + str(self.event_id) + '","ip":' + ("null" if self.ip is None else q(self.ip))
            + ',"occurredAt":"' + occurred + '","recordedAt":"' + recorded + '","requestId":' + q(self.request_id)
            + ',"resourceId":' + q(self.resource_id) + ',"resourceType":' + q(self.resource_type)
            + ',"sessionId":' + q(self.session_id) + ',"success":' + ("true" if self.success else "false")
            + ',"userAgent":' + q(self.user_agent) + "}"
        )


# How json.dumps(..., ensure_ascii=False) writes a string.
_quote = json.encoder.encode_basestring


# json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False), without building an
# encoder per call.
_details_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _copy_text(value: str) -> str:
    """A value in COPY's text format: backslash, tab, newline and carriage return escaped."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


_COLUMNS = ("id", "event_id", "occurred_at", "recorded_at", "actor_user_id", "actor_ref", "actor_label", "action",
            "resource_type", "resource_id", "details", "ip", "user_agent", "session_id", "request_id", "success",
            "error_message", "prev_hash", "row_hash")


def chain_append(rows: list[NewRow]) -> list[NewRow]:
    """Append the rows whose event id is not stored yet, in list order; returns the rows written.

    Under the chain lock: one query finds the ids already stored, the hashes are computed in one pass,
    ids come from the table's sequence in one query, and the rows go in with one `COPY` (PostgreSQL;
    a multi-row INSERT elsewhere). The unique event id is the backstop: a row written without the lock
    makes the COPY fail and the whole append roll back.
    """
    if not rows:
        return []
    with transaction.atomic():
        head = lock_head()
        seen, fresh = set(), []
        for row in rows:
            if row.event_id not in seen:
                seen.add(row.event_id)
                fresh.append(row)
        stored = _stored_event_ids(list(seen))
        if stored:
            fresh = [row for row in fresh if row.event_id not in stored]
        if not fresh:
            return []
        prev = head.last_hash
        texts = []
        recorded: dict[dt.datetime, str] = {}
        for row in fresh:
            details_json, occurred = _details_json(row.details), _iso(row.occurred_at)
            when = recorded.get(row.recorded_at) or recorded.setdefault(row.recorded_at, _iso(row.recorded_at))
            row.prev_hash = prev
            row.row_hash = prev = _hash(row.canonical(details_json, occurred, when), prev)
            texts.append((details_json, occurred, when))
        if connection.vendor == "postgresql":
            _copy(fresh, texts, head)
        else:
            _insert(fresh, head)
        last_id = fresh[-1].id
        assert last_id is not None  # _copy and _insert gave every appended row its id (or raised)
        head.last_id, head.last_hash, head.length = last_id, prev, head.length + len(fresh)
        head.save(update_fields=["last_id", "last_hash", "length", "updated_at"])
    return fresh


def _stored_event_ids(event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    if connection.vendor != "postgresql":
        return set(AuditLog.objects.filter(event_id__in=event_ids).values_list("event_id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute("SELECT event_id FROM audit_auditlog WHERE event_id = ANY(%s)", [event_ids])
        return {r[0] for r in cursor.fetchall()}


def _copy(rows: list[NewRow], texts: list[tuple[str, str, str]], head: AuditChainHead) -> None:
    with connection.cursor() as cursor:
        # Ids drawn in one statement are increasing; sorted anyway, since the chain order is the id order.
        cursor.execute("SELECT nextval(pg_get_serial_sequence('audit_auditlog', 'id')) FROM generate_series(1, %s)",
                       [len(rows)])
        ids = sorted(r[0] for r in cursor.fetchall())
        if ids[0] <= head.last_id:
            raise ChainWriteError(details={"nextId": ids[0], "headId": head.last_id})
        # The COPY text is built here in one string: psycopg's per-value adaptation (write_row) cost more
        # than everything else per row. Timestamps go in as the exact text that was hashed.
        t, null = _copy_text, "\\N"
        lines = []
        for row, pk, (details_json, occurred, recorded) in zip(rows, ids, texts):
            row.id = pk
            lines.append("\t".join((
                str(pk), str(row.event_id), occurred, recorded,
                null if row.actor_id is None else str(int(row.actor_id)),
                null if row.actor_ref is None else str(int(row.actor_ref)),
                t(row.actor_label), t(row.action), t(row.resource_type), t(row.resource_id), t(details_json),
                null if row.ip is None else t(row.ip), t(row.user_agent), t(row.session_id), t(row.request_id),
                "t" if row.success else "f", t(row.error_message), row.prev_hash, row.row_hash,
            )))
        lines.append("")
        raw = cursor.cursor  # psycopg's own cursor: COPY is not part of the DB-API
        with raw.copy(f"COPY audit_auditlog ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            copy.write("\n".join(lines))


def _insert(rows: list[NewRow], head: AuditChainHead) -> None:
    """Without COPY (SQLite, laptop runs): the single writer assigns increasing ids in list order."""
    objs = [AuditLog(**{f: getattr(row, f) for f in ("event_id", "occurred_at", "recorded_at", "actor_id",
                                                       "actor_ref", "actor_label", "action", "resource_type",
                                                       "resource_id", "details", "ip", "user_agent", "session_id",
                                                       "request_id", "success", "error_message", "prev_hash",
                                                       "row_hash")}) for row in rows]
    AuditLog.objects.bulk_create(objs, batch_size=500)
    ids = dict(AuditLog.objects.filter(event_id__in=[r.event_id for r in rows]).values_list("event_id", "id"))
    order = [pk for pk in (ids.get(row.event_id) for row in rows) if pk is not None]
    if len(order) != len(rows) or order != sorted(order) or order[0] <= head.last_id:
        raise ChainWriteError(details={"written": len(order), "expected": len(rows)})
    for row, pk in zip(rows, order):
        row.id = pk


# --- Verification


@dataclass
class ChainReport:
    ok: bool
    checked: int
    gaps: int
    head_id: int
    kind: str = ""  # altered | inserted | removed
    row_id: int | None = None
    after_id: int | None = None
    message: str = ""

    def as_dict(self) -> dict:
        body: dict[str, object] = {"ok": self.ok, "checked": self.checked, "checkpoints": self.gaps, "headId": self.head_id}
        if not self.ok:
            body["problem"] = {"kind": self.kind, "rowId": self.row_id, "afterId": self.after_id,
                               "message": self.message}
        return body


_FIELDS = ["id", "event_id", "occurred_at", "recorded_at", "actor_ref", "actor_label", "action", "resource_type",
           "resource_id", "details", "ip", "user_agent", "session_id", "request_id", "success", "error_message",
           "prev_hash", "row_hash"]


def _rows(chunk: int):
    last = 0
    while True:
        batch = list(AuditLog.objects.filter(id__gt=last).order_by("id").only(*_FIELDS)[:chunk])
        yield from batch
        if len(batch) < chunk:
            return
        last = batch[-1].id


def chain_verify(*, chunk: int = 2000) -> ChainReport:
    """Walk the chain in id order; report the first row that was altered, inserted or removed."""
    head = AuditChainHead.objects.filter(pk=1).first() or AuditChainHead(pk=1)
    gaps = {gap.after_id: gap for gap in AuditChainGap.objects.all()}
    checked = 0
    prev_id, prev_hash, prev_prev_hash = 0, GENESIS_HASH, None

    def bridged(after_id, row):
        gap = gaps.get(after_id)
        return gap is not None and gap.last_hash == row.prev_hash and gap.last_deleted_id < row.id

    def fail(kind, row_id, after_id, message):
        return ChainReport(False, checked, len(gaps), head.last_id, kind, row_id, after_id, message)

    rows = _rows(chunk)
    row = next(rows, None)
    while row is not None:
        following = next(rows, None)
        intact = compute_hash(row, row.prev_hash) == row.row_hash
        linked = row.prev_hash == prev_hash or bridged(prev_id, row)
        if not (intact and linked):
            if following is not None and not linked and (
                following.prev_hash == prev_hash or bridged(prev_id, following)
            ):
                return fail("inserted", row.id, prev_id, f"Row {row.id} is not part of the chain: it was inserted.")
            if not intact:
                return fail("altered", row.id, prev_id, f"Row {row.id} does not match its hash: it was altered.")
            if prev_prev_hash is not None and row.prev_hash == prev_prev_hash:
                return fail("inserted", prev_id, None, f"Row {prev_id} is not part of the chain: it was inserted.")
            return fail("removed", row.id, prev_id,
                        f"The chain breaks between rows {prev_id} and {row.id}: rows were removed "
                        f"(or row {prev_id} was altered and re-hashed).")
        checked += 1
        prev_id, prev_prev_hash, prev_hash = row.id, prev_hash, row.row_hash
        row = following

    if prev_id > head.last_id:
        return fail("inserted", prev_id, head.last_id, f"Row {prev_id} lies beyond the chain's recorded end.")
    if prev_id == head.last_id and prev_hash != head.last_hash:
        return fail("altered", prev_id, None, f"Row {prev_id} differs from the chain's recorded end.")
    if prev_id < head.last_id:
        gap = gaps.get(prev_id)
        if not (gap and gap.last_deleted_id == head.last_id and gap.last_hash == head.last_hash):
            return fail("removed", None, prev_id, f"Rows after {prev_id} up to {head.last_id} were removed.")
    return ChainReport(True, checked, len(gaps), head.last_id)
