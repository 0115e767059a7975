"""Enqueue and push: a record is written in the caller's transaction and pushed to RQ on commit,
so a rolled-back write enqueues nothing. Idempotency keys return the existing job."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import uuid
import zlib
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework import serializers
from rq.job import JobStatus as RQJobStatus
from rq.utils import now as rq_now
from rq.utils import utcformat

from queues import signals
from queues.connections import get_connection, get_rq_queue, get_rq_queue_by_name, script_run
from queues.constants import JobStatus, Priority, rq_queue_name
from queues.definitions import JobDefinition, registry
from queues.fairness import fair_push_many
from queues.logs import current_request_id
from queues.models import JobRecord
from queues.services.batch import statement_cursor
from queues.services.fair import queue_is_fair
from queues.tracing import job_trace_context_capture
from slimy_site.exceptions import ApplicationError, ValidationFailed

logger = logging.getLogger(__name__)


RUNNER = "queues.runner.execute"
_PRIORITIES = frozenset(Priority.values)
IDEMPOTENCY_WINDOW = dt.timedelta(hours=24)
MAX_DELAY = dt.timedelta(days=30)


class IdempotencyKeyReused(ApplicationError):
    code = "idempotency_key_reused"
    status = 422
    message = "This Idempotency-Key was already used with a different request."


class UnknownJobType(ApplicationError):
    code = "unknown_job_type"
    status = 400
    message = "Unknown job type."


def job_definition_get(job_type: str) -> type[JobDefinition]:
    definition = registry.get(job_type)
    if definition is None:
        raise UnknownJobType(f"Unknown job type: {job_type!r}.")
    return definition


def payload_fingerprint(job_type: str, payload: dict, priority: str = Priority.NORMAL) -> str:
    canonical = json.dumps([job_type, payload, priority], sort_keys=True, cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _scheduled_for(run_at: dt.datetime | None, delay: float | None) -> dt.datetime | None:
    if run_at is not None and delay is not None:
        raise ValidationFailed(details={"delay": ["Give run_at or delay, not both."]})
    now = timezone.now()
    if delay is not None:
        if delay < 0:
            raise ValidationFailed(details={"delay": ["Must not be negative."]})
        run_at = now + dt.timedelta(seconds=delay)
    if run_at is None:
        return None
    if timezone.is_naive(run_at):
        raise ValidationFailed(details={"run_at": ["Must carry a time zone."]})
    if run_at - now > MAX_DELAY:
        raise ValidationFailed(details={"run_at": ["Must be within 30 days."]})
    return run_at if run_at > now else None


def job_enqueue(
    *,
    job_type: str,
    payload: dict,
    owner=None,
    priority: str = Priority.NORMAL,
    run_at: dt.datetime | None = None,
    delay: float | None = None,
    idempotency_key: str | None = None,
    request_id: str | None = None,
) -> JobRecord:
    """Validate, write the record, push to RQ on commit. Returns the record.

    With an idempotency key already used by the same owner (within 24 h), returns that job
    instead (its `replayed` attribute is True); a different payload under the same key is a 422.
    """
    definition = job_definition_get(job_type)
    if priority not in _PRIORITIES:
        raise ValidationFailed(details={"priority": [f"Must be one of {', '.join(Priority.values)}."]})
    try:
        clean = definition.validate(payload)
    except serializers.ValidationError as exc:
        raise ValidationFailed(details=exc.detail) from exc
    scheduled_for = _scheduled_for(run_at, delay) if run_at is not None or delay is not None else None
    fingerprint = payload_fingerprint(job_type, clean, priority) if idempotency_key else ""

    if idempotency_key:
        existing = _idempotent_match(owner, idempotency_key, fingerprint)
        if existing is not None:
            return existing

    owner = owner if owner is not None and owner.is_authenticated else None
    record = _new_record(
        id=uuid.uuid4(),
        job_type=job_type,
        queue=definition.queue,
        owner_id=owner.pk if owner is not None else None,
        payload=clean,
        priority=priority,
        max_attempts=definition.retry.max_attempts,
        scheduled_for=scheduled_for,
        status=JobStatus.SCHEDULED if scheduled_for else JobStatus.QUEUED,
        request_id=request_id if request_id is not None else current_request_id(),
        idempotency_key=idempotency_key or None,
        idempotency_fingerprint=fingerprint,
        tenant=definition.tenant_of(clean, owner.pk if owner is not None else None),
        trace_context=job_trace_context_capture(),
    )
    if owner is not None:
        record._state.fields_cache["owner"] = owner  # as `owner=owner` leaves it: no query to read it back
    connection = transaction.get_connection()
    in_transaction = connection.in_atomic_block
    try:
        # A savepoint only inside a caller's transaction (to survive a duplicate key); on its own the
        # INSERT is atomic already, and BEGIN/COMMIT would be two more round trips per submission.
        if in_transaction:
            with transaction.atomic():
                _record_insert(record, connection)
        else:
            _record_insert(record, connection)
    except IntegrityError:
        # A concurrent request with the same key won the insert: answer with its job.
        existing = _idempotent_match(owner, idempotency_key, fingerprint) if idempotency_key else None
        if existing is None:
            raise
        return existing
    record.replayed = False
    if not in_transaction and connection.autocommit:
        # Committed already (autocommit, the API's case): what on_commit would call at once, without it.
        job_push_safely(record.pk, record=record)
        signals.job_enqueued.send(sender=JobRecord, job=record)
        return record
    # The record just written is what gets pushed: no need to read it back.
    transaction.on_commit(lambda: job_push_safely(record.pk, record=record))
    # Counted on commit: a rolled-back write enqueued nothing.
    transaction.on_commit(lambda: signals.job_enqueued.send(sender=JobRecord, job=record))
    return record


@functools.cache
def _record_defaults() -> tuple[tuple[str, Any], ...]:
    fresh = JobRecord()
    return tuple((field.attname, getattr(fresh, field.attname)) for field in JobRecord._meta.concrete_fields)


def _new_record(*, id, **values) -> JobRecord:
    """`JobRecord(id=id, **values)` (by attribute name) as Django builds the rows it loads: every field by
    position, the others at a fresh record's defaults (a dict default copied). Keyword arguments cost
    three times as much."""
    values["id"] = id
    row: Any = [
        values[name] if name in values else default.copy() if type(default) is dict else default
        for name, default in _record_defaults()
    ]
    return JobRecord(*row)


# The columns job_enqueue sets on a new record; every other column holds its default.
_SET_PER_RECORD = frozenset(
    (
        "id", "job_type", "queue", "owner_id", "payload", "status", "priority", "max_attempts", "scheduled_for",
        "created_at", "updated_at", "request_id", "idempotency_key", "idempotency_fingerprint", "tenant",
        "trace_context",
    )
)  # fmt: skip


@functools.cache
def _insert_statement(vendor: str) -> tuple[str, tuple]:
    """The INSERT of a record made by job_enqueue, and the fields of its parameters.

    Columns job_enqueue leaves at their default (NULL, '' or 0 on a new record) are written into the
    statement; the others are parameters. A field whose database value differs from its Python one
    (the JSON columns) is converted by the field, as the ORM converts it; the rest go as they are."""
    connection = transaction.get_connection()
    qn = connection.ops.quote_name
    fresh = JobRecord()
    columns, values, fields = [], [], []
    for field in JobRecord._meta.concrete_fields:
        columns.append(qn(field.column))
        default = field.get_db_prep_save(getattr(fresh, field.attname), connection)
        if field.attname not in _SET_PER_RECORD and (default is None or default == "" or isinstance(default, int)):
            values.append("NULL" if default is None else "''" if default == "" else str(int(default)))
            continue
        values.append("%s")
        # psycopg adapts UUIDs and datetimes itself; other backends (SQLite, `make run`'s default) need the
        # field's conversion for every column.
        converts = field.get_internal_type() == "JSONField" or vendor != "postgresql"
        fields.append((field.attname, field.get_db_prep_save if converts else None))
    sql = f"INSERT INTO {qn(JobRecord._meta.db_table)} ({', '.join(columns)}) VALUES ({', '.join(values)})"
    return sql, tuple(fields)


def _record_insert(record: JobRecord, connection) -> None:
    """`record.save(force_insert=True)` as one prepared statement: the ORM's compilation of the INSERT was
    a sixth of a submission's CPU. The record is one job_enqueue made (its other columns hold their
    defaults); the two timestamps are set as `auto_now_add`/`auto_now` would set them. JobRecord has no
    save() override and nothing listens to its save signals."""
    sql, fields = _insert_statement(connection.vendor)
    record.created_at = record.updated_at = timezone.now()
    values = [
        getattr(record, attname) if convert is None else convert(getattr(record, attname), connection)
        for attname, convert in fields
    ]
    with statement_cursor(connection) as cursor:
        cursor.execute(sql, values)
    record._state.adding = False
    record._state.db = connection.alias


def _idempotent_match(owner, key: str, fingerprint: str) -> JobRecord | None:
    if owner is None or not owner.is_authenticated:
        return None
    existing = JobRecord.objects.filter(owner=owner, idempotency_key=key).first()
    if existing is None:
        return None
    if existing.created_at < timezone.now() - IDEMPOTENCY_WINDOW:
        # The key expired: free it so a new job may take it.
        JobRecord.objects.filter(pk=existing.pk).update(idempotency_key=None)
        return None
    if existing.idempotency_fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    existing.replayed = True
    return existing


def job_push_safely(job_id, record: JobRecord | None = None) -> None:
    """Push after commit. If Redis is unreachable the record stays waiting and the reconciler pushes it."""
    try:
        job_push(job=record if record is not None else JobRecord.objects.get(pk=job_id))
    except (RedisError, OSError):
        logger.warning("push to Redis failed; the reconciler will enqueue job %s", job_id, exc_info=True)


def job_push(*, job: JobRecord, front: bool = False) -> None:
    """Put the record's id on its RQ queue (or in the scheduled registry when it runs later). `front`:
    ahead of the jobs waiting at its priority (in its tenant's line on a fair queue)."""
    definition = registry.get(job.job_type)
    timeout = definition.timeout if definition else 60
    ttl = (definition.result_ttl if definition else None) or settings.JOB_RESULT_TTL
    scheduled = job.scheduled_for if job.scheduled_for and job.scheduled_for > timezone.now() else None
    if scheduled is None and not queue_is_fair(job.queue):
        # The common case, without building RQ's Queue object: the push script on cached keys.
        _push_now(
            rq_queue_name(job.queue, job.priority),
            job_id=str(job.id),
            job_type=job.job_type,
            timeout=timeout,
            ttl=ttl,
            front=front,
        )
        return
    queue = get_rq_queue(job.queue, job.priority)
    options: dict[str, Any] = dict(
        job_id=str(job.id),
        job_timeout=timeout,
        result_ttl=ttl,
        failure_ttl=ttl,
        description=job.job_type,
        meta={"job_type": job.job_type},
    )
    with queue.connection.pipeline() as pipe:
        # One round trip (one MULTI/EXEC) for enqueuing and forgetting a failed copy. The enqueue goes
        # first: RQ opens the transaction (MULTI) itself and refuses a pipeline with commands in it.
        if scheduled is not None:
            # RQ's scheduler keeps whole seconds (truncated): round up so a job never starts early.
            due = scheduled.replace(microsecond=0) + dt.timedelta(seconds=1 if scheduled.microsecond else 0)
            queue.enqueue_at(due, RUNNER, str(job.id), pipeline=pipe, **options)
        else:
            # A fair queue: the RQ job is written as `enqueue` would, but its id waits in its tenant's line.
            timeout = options.pop("job_timeout")
            rq_job = queue.create_job(RUNNER, args=(str(job.id),), timeout=timeout, **options)
            rq_job.enqueued_at = rq_now()
            rq_job.save(pipeline=pipe)
            fair_push_many(
                conn=queue.connection,
                pipeline=pipe,
                queue=job.queue,
                items=[(job.priority, job.tenant, str(job.id))],
                front=front,
            )
        queue.failed_job_registry.remove(str(job.id), pipeline=pipe)
        pipe.execute()


# What `queue.enqueue(...)` followed by `failed_job_registry.remove(...)` writes, in one script (one command
# instead of a MULTI/EXEC of six, and no RQ Job object built per push): the queue registered in RQ's set of
# queues, the job hash, the id at the tail of the queue's list, a failed copy forgotten. Atomic like RQ's
# transaction. KEYS: rq:queues, the queue's list, the job hash, the failed registry. ARGV: the queue key,
# the job id, "1" for the head of the list (RQ's at_front), then the hash's field/value pairs.
_PUSH_SCRIPT = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[3], unpack(ARGV, 4))
if ARGV[3] == '1' then redis.call('LPUSH', KEYS[2], ARGV[2]) else redis.call('RPUSH', KEYS[2], ARGV[2]) end
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""


@functools.lru_cache(maxsize=1024)
def _rq_job_template(queue_name: str, redis_url: str, job_type: str, timeout: int, ttl: int):
    """The RQ job hash every push of this (queue, job type) writes, built once by RQ itself; only the
    record id (in `data`) and the two timestamps differ from push to push. Returns (fields, serializer)."""
    queue = get_rq_queue_by_name(queue_name)
    rq_job = queue.create_job(
        RUNNER,
        args=("00000000-0000-0000-0000-000000000000",),
        timeout=timeout,
        result_ttl=ttl,
        failure_ttl=ttl,
        description=job_type,
        meta={"job_type": job_type},
        job_id="00000000-0000-0000-0000-000000000000",
    )
    rq_job.origin = queue.name
    rq_job.enqueued_at = rq_now()
    rq_job._status = RQJobStatus.QUEUED
    fields = rq_job.to_dict()
    return fields, rq_job.serializer


@functools.lru_cache(maxsize=256)
def _push_keys(rq_name: str, redis_url: str) -> tuple[str, str, str, Any]:
    """The keys the push script of one RQ list writes (RQ's set of queues, the list, the failed
    registry) and RQ's job class (the job hash's key), read once from RQ's own Queue."""
    queue = get_rq_queue_by_name(rq_name)
    return queue.redis_queues_keys, queue.key, queue.failed_job_registry.key, queue.job_class


def _push_now(rq_name: str, *, job_id: str, job_type: str, timeout: int, ttl: int, front: bool = False) -> None:
    queues_key, list_key, failed_key, job_class = _push_keys(rq_name, settings.REDIS_URL)
    fields, serializer = _rq_job_template(rq_name, settings.REDIS_URL, job_type, timeout, ttl)
    fields = dict(fields)
    stamp = utcformat(rq_now())
    fields["created_at"] = fields["enqueued_at"] = stamp
    fields["data"] = zlib.compress(serializer.dumps((RUNNER, None, (job_id,), {})))
    args: list[Any] = [list_key, job_id, "1" if front else "0"]
    for name, value in fields.items():
        args += (name, value)
    script_run(
        get_connection(), _PUSH_SCRIPT, keys=[queues_key, list_key, job_class.key_for(job_id), failed_key], args=args
    )
