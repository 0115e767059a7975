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
from typing import NamedTuple

from django.db import IntegrityError, connection, transaction

from audit.models import GENESIS_HASH, AuditChainGap, AuditChainHead, AuditLog
from slimy_site.exceptions import ApplicationError


class ChainWriteError(ApplicationError):
    code = "audit_chain_write_failed"
    status = 503
    message = "The audit chain could not be extended consistently."


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def canonical_json(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(row: AuditLog) -> str:
    return canonical_json(
        {
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
        }
    )


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


class NewRow(NamedTuple):
    """One row to append, prepared outside the chain lock: everything but its id and its hashes.

    Built by `new_row` from plain values (no model instance: appends run at tens of thousands of rows
    a second); under the lock only the hash chaining and the COPY remain.
    """

    event_id: str  # the canonical UUID text
    canonical: str  # canonical_json of the row's content (what is hashed, with the previous row's hash)
    columns: str  # the row's COPY text from event_id to error_message (_MIDDLE), escaped
    values: tuple  # the plain values, in _MIDDLE order (the non-PostgreSQL insert uses them)


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


_NULL = "\\N"
_MIDDLE = (
    "event_id",
    "occurred_at",
    "recorded_at",
    "actor_user_id",
    "actor_ref",
    "actor_label",
    "action",
    "resource_type",
    "resource_id",
    "details",
    "ip",
    "user_agent",
    "session_id",
    "request_id",
    "success",
    "error_message",
)
_COLUMNS = ("id", *_MIDDLE, "prev_hash", "row_hash")


def timestamp_text(value: dt.datetime) -> str:
    """A timestamp as the chain hashes it (UTC, microseconds): `_iso`."""
    return _iso(value)


def new_row(
    event_id: str,
    occurred: str,
    recorded: str,
    actor_id: int | None,
    actor_ref: int | None,
    actor_label: str,
    action: str,
    resource_type: str,
    resource_id: str,
    details: dict,
    ip: str | None,
    user_agent: str,
    session_id: str,
    request_id: str,
    success: bool,
    error_message: str,
) -> NewRow:
    """The row for these values (positional: called once per event). `occurred` and `recorded` are
    `timestamp_text` forms; `event_id` is the canonical UUID text; `ip` as PostgreSQL's inet prints it.

    The canonical JSON is assembled from parts, top-level keys in sorted order, strings encoded as
    json.dumps does (tests/audit/test_chain.py checks it equals canonical_json of the stored row), the
    details serialized once for the hash and the COPY alike.
    """
    q = _quote
    details_json = _details_json(details)
    actor_ref_text = "null" if actor_ref is None else str(int(actor_ref))
    canonical = (
        '{"action":'
        + q(action)
        + ',"actorLabel":'
        + q(actor_label)
        + ',"actorRef":'
        + actor_ref_text
        + ',"details":'
        + details_json
        + ',"errorMessage":'
        + q(error_message)
        + ',"eventId":"'
        + event_id
        + '","ip":'
        + ("null" if ip is None else q(ip))
        + ',"occurredAt":"'
        + occurred
        + '","recordedAt":"'
        + recorded
        + '","requestId":'
        + q(request_id)
        + ',"resourceId":'
        + q(resource_id)
        + ',"resourceType":'
        + q(resource_type)
        + ',"sessionId":'
        + q(session_id)
        + ',"success":'
        + ("true" if success else "false")
        + ',"userAgent":'
        + q(user_agent)
        + "}"
    )
    texts: tuple[str, ...] = (
        actor_label,
        action,
        resource_type,
        resource_id,
        details_json,
        user_agent,
        session_id,
        request_id,
        error_message,
        ip or "",
    )
    joined = "".join(texts)
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        texts = tuple(map(_copy_text, texts))
    null = _NULL
    columns = "\t".join(
        (
            event_id,
            occurred,
            recorded,
            null if actor_id is None else str(int(actor_id)),
            null if actor_ref is None else actor_ref_text,
            texts[0],
            texts[1],
            texts[2],
            texts[3],
            texts[4],
            null if ip is None else texts[9],
            texts[5],
            texts[6],
            texts[7],
            "t" if success else "f",
            texts[8],
        )
    )
    values = (
        event_id,
        occurred,
        recorded,
        actor_id,
        actor_ref,
        actor_label,
        action,
        resource_type,
        resource_id,
        details,
        ip,
        user_agent,
        session_id,
        request_id,
        bool(success),
        error_message,
    )
    return NewRow(event_id, canonical, columns, values)


# Rows per COPY write: PostgreSQL inserts one chunk while the next one is hashed and formatted.
COPY_CHUNK = 500


def chain_append(rows: list[NewRow]) -> list[NewRow]:
    """Append the rows whose event id is not stored yet, in list order; returns the rows written.

    Under the chain lock: row ids come from the table's sequence in one query, and the rows are hashed in
    one pass while they stream into one `COPY` (PostgreSQL; a multi-row INSERT elsewhere). On PostgreSQL
    the COPY is tried first as if no event id were stored yet (the common case: looking 1,000 ids up cost
    a fifth of an append); the unique event id refuses the whole COPY when one is, and the append is done
    again from a savepoint without the ids one query finds stored. A row written without the lock makes
    the COPY fail the same way: the unique index, not the look-up, is what keeps an event stored once.
    """
    if not rows:
        return []
    with transaction.atomic():
        head = lock_head()
        seen, fresh = set(), []
        for row in rows:  # the first of each event id, in list order
            if row.event_id not in seen:
                seen.add(row.event_id)
                fresh.append(row)
        if connection.vendor == "postgresql":
            try:
                with transaction.atomic():
                    last_id, last_hash = _copy(fresh, head)
            except IntegrityError:
                # An event id already stored (or any other refusal: then the second COPY fails the same way).
                stored = _stored_event_ids(list(seen))
                fresh = [row for row in fresh if row.event_id not in stored]
                if not fresh:
                    return []
                last_id, last_hash = _copy(fresh, head)
        else:
            stored = _stored_event_ids(list(seen))
            fresh = [row for row in fresh if row.event_id not in stored]
            if not fresh:
                return []
            last_id, last_hash = _insert(fresh, head)
        head.last_id, head.last_hash, head.length = last_id, last_hash, head.length + len(fresh)
        head.save(update_fields=["last_id", "last_hash", "length", "updated_at"])
    return fresh


def _stored_event_ids(event_ids: list[str]) -> set[str]:
    if connection.vendor != "postgresql":
        return {str(i) for i in AuditLog.objects.filter(event_id__in=event_ids).values_list("event_id", flat=True)}
    with connection.cursor() as cursor:
        cursor.execute("SELECT event_id FROM audit_auditlog WHERE event_id = ANY(%s::uuid[])", [event_ids])
        return {str(r[0]) for r in cursor.fetchall()}


def _copy(rows: list[NewRow], head: AuditChainHead) -> tuple[int, str]:
    with connection.cursor() as cursor:
        # Ids drawn in one statement are increasing; sorted anyway, since the chain order is the id order.
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('audit_auditlog', 'id')) FROM generate_series(1, %s)", [len(rows)]
        )
        ids = sorted(r[0] for r in cursor.fetchall())
        if ids[0] <= head.last_id:
            raise ChainWriteError(details={"nextId": ids[0], "headId": head.last_id})
        # The COPY text is built here (psycopg's per-value adaptation, write_row, cost more than everything
        # else per row) and sent in chunks, so the server inserts while the next chunk is hashed.
        sha256, prev, lines = hashlib.sha256, head.last_hash, []
        raw = cursor.cursor  # psycopg's own cursor: COPY is not part of the DB-API
        with (
            connection.wrap_database_errors,
            raw.copy(f"COPY audit_auditlog ({', '.join(_COLUMNS)}) FROM STDIN") as copy,
        ):
            for pk, row in zip(ids, rows):
                row_hash = sha256((row.canonical + "\n" + prev).encode("utf-8", "surrogatepass")).hexdigest()
                lines.append(f"{pk}\t{row.columns}\t{prev}\t{row_hash}\n")
                prev = row_hash
                if len(lines) >= COPY_CHUNK:
                    copy.write("".join(lines))
                    lines.clear()
            if lines:
                copy.write("".join(lines))
    return ids[-1], prev


def _insert(rows: list[NewRow], head: AuditChainHead) -> tuple[int, str]:
    """Without COPY (SQLite, laptop runs): the single writer assigns increasing ids in list order."""
    objs, prev = [], head.last_hash
    for row in rows:
        row_hash = _hash(row.canonical, prev)
        fields = dict(zip(_MIDDLE, row.values))
        fields["actor_id"] = fields.pop("actor_user_id")
        objs.append(AuditLog(**fields, prev_hash=prev, row_hash=row_hash))
        prev = row_hash
    AuditLog.objects.bulk_create(objs, batch_size=500)
    ids = dict(AuditLog.objects.filter(event_id__in=[r.event_id for r in rows]).values_list("event_id", "id"))
    order = [pk for pk in (ids.get(uuid.UUID(row.event_id)) for row in rows) if pk is not None]
    if len(order) != len(rows) or order != sorted(order) or order[0] <= head.last_id:
        raise ChainWriteError(details={"written": len(order), "expected": len(rows)})
    return order[-1], prev


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
        body: dict[str, object] = {
            "ok": self.ok,
            "checked": self.checked,
            "checkpoints": self.gaps,
            "headId": self.head_id,
        }
        if not self.ok:
            body["problem"] = {
                "kind": self.kind,
                "rowId": self.row_id,
                "afterId": self.after_id,
                "message": self.message,
            }
        return body


_FIELDS = [
    "id",
    "event_id",
    "occurred_at",
    "recorded_at",
    "actor_ref",
    "actor_label",
    "action",
    "resource_type",
    "resource_id",
    "details",
    "ip",
    "user_agent",
    "session_id",
    "request_id",
    "success",
    "error_message",
    "prev_hash",
    "row_hash",
]


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
            if (
                following is not None
                and not linked
                and (following.prev_hash == prev_hash or bridged(prev_id, following))
            ):
                return fail("inserted", row.id, prev_id, f"Row {row.id} is not part of the chain: it was inserted.")
            if not intact:
                return fail("altered", row.id, prev_id, f"Row {row.id} does not match its hash: it was altered.")
            if prev_prev_hash is not None and row.prev_hash == prev_prev_hash:
                return fail("inserted", prev_id, None, f"Row {prev_id} is not part of the chain: it was inserted.")
            return fail(
                "removed",
                row.id,
                prev_id,
                f"The chain breaks between rows {prev_id} and {row.id}: rows were removed "
                f"(or row {prev_id} was altered and re-hashed).",
            )
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
