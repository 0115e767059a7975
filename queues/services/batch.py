"""Start and complete, for one job or many: the ledger transitions the runner and the worker runtime use.

`job_start` / `job_complete` (queues.services.transitions) are these with one job. The conditions
(start only from a waiting status; complete only a record still `started` in the same attempt),
but on PostgreSQL each is ONE statement — a data-modifying CTE that updates the records and writes
their attempt rows — so a batch of jobs costs two round trips and two commits instead of nine per
job. Elsewhere (SQLite) they fall back to ORM statements, one job at a time.

The start is committed without waiting for the WAL flush (`synchronous_commit = off` for that one
statement): the job then starts one disk flush sooner. Nothing is lost by it: if PostgreSQL crashed
before flushing, the record is simply back to waiting and the reconciler pushes it again
(at-least-once), and every later synchronous commit — the completion first — flushes it anyway.
Completions stay fully synchronous: a finished job is never reported and then forgotten.
"""

from __future__ import annotations

import json

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from queues.constants import DUE_TOLERANCE, WAITING_STATUSES, JobStatus
from queues.models import JobAttempt, JobRecord
from slimy_site.tracing import tracing_active

_RECORD = JobRecord._meta.db_table
_ATTEMPT = JobAttempt._meta.db_table
_WAITING = sorted(str(s) for s in WAITING_STATUSES)

_FIELDS = JobRecord._meta.concrete_fields
_COLUMNS = ", ".join(f'"{f.column}"' for f in _FIELDS)
_ATTNAMES = [f.attname for f in _FIELDS]
_CONVERTERS = [(i, f.from_db_value) for i, f in enumerate(_FIELDS) if hasattr(f, "from_db_value")]


def _started_ctes(which: str) -> str:
    """The `started` (records of `which` ids still waiting and due, marked started) and `attempt` (their
    attempt rows) parts of a start statement, committed without the disk flush (see the module's note)."""
    return f"""started AS (
    UPDATE {_RECORD}
       SET status = %(started)s, attempts = attempts + 1, started_at = %(now)s, worker_name = %(worker)s,
           progress = NULL, updated_at = %(now)s
      FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_fsync_wait
     WHERE {which} AND status = ANY(%(waiting)s::text[])
       AND (scheduled_for IS NULL OR scheduled_for <= %(due)s)
 RETURNING {_COLUMNS}
), attempt AS (
    INSERT INTO {_ATTEMPT} (job_id, number, worker_name, started_at, finished_at, outcome, error_message,
                            error_traceback)
    SELECT id, attempts, %(worker)s, %(now)s, NULL, %(running)s, '', '' FROM started
)"""


# `heavy` job types (threaded and async jobs) each need a slot of their own; the others run one after
# another on their queue's lane and share one. With a limit, the ids start in order while the slots they
# take stay within it (a strict prefix, so the order holds); the rest are left waiting and returned as
# `deferred`, in order (the caller puts them back at the head of their list). Without one (NULL), every
# waiting id starts.
START_SQL = f"""
WITH candidate AS (
    SELECT id, job_type = ANY(%(heavy)s::text[]) AS heavy, array_position(%(ids)s::uuid[], id) AS pos
      FROM {_RECORD}
     WHERE id = ANY(%(ids)s::uuid[]) AND status = ANY(%(waiting)s::text[])
       AND (scheduled_for IS NULL OR scheduled_for <= %(due)s)
), costed AS (
    SELECT id, pos, sum(heavy::int) OVER upto + max((NOT heavy)::int) OVER upto AS slots
      FROM candidate WINDOW upto AS (ORDER BY pos ROWS UNBOUNDED PRECEDING)
), pick AS (
    SELECT id FROM costed WHERE %(limit)s::int IS NULL OR slots <= %(limit)s::int
), {_started_ctes("id IN (SELECT id FROM pick)")}
SELECT (SELECT array_agg(c.id::text ORDER BY c.pos) FROM costed c WHERE c.id NOT IN (SELECT id FROM pick)),
       started.*
  FROM (SELECT 1) AS one LEFT JOIN started ON true
"""

# Without a limit (the usual case: one popped id, or ids that all fit their slots) nothing is deferred and
# the costing above is not needed: the same update and attempt rows, planned in half the time (on the
# pickup path — submit to handler start — this statement is the worker's one round trip to PostgreSQL).
START_ALL_SQL = f"""
WITH {_started_ctes("id = ANY(%(ids)s::uuid[])")}
SELECT NULL, started.* FROM started
"""

COMPLETE_SQL = f"""
WITH input AS (
    SELECT * FROM unnest(%s::uuid[], %s::int[], %s::jsonb[]) AS t(id, attempts, result)
), done AS (
    UPDATE {_RECORD} AS j
       SET status = %s, result = input.result, finished_at = %s, scheduled_for = NULL
      FROM input
     WHERE j.id = input.id AND j.status = %s AND j.attempts = input.attempts
 RETURNING j.id
), attempt AS (
    UPDATE {_ATTEMPT} AS a
       SET outcome = CASE WHEN done.id IS NULL THEN %s ELSE %s END, finished_at = %s
      FROM input LEFT JOIN done ON done.id = input.id
     WHERE a.job_id = input.id AND a.number = input.attempts
       AND (done.id IS NOT NULL OR a.outcome = %s)  -- a closed attempt (abandoned, cancelled) keeps its outcome
)
SELECT id FROM done
"""


def statement_cursor(connection):
    """The cursor for a statement run on every submission or batch: bound on the server and prepared once
    per session where the backend offers it (slimy_site.postgresql's `bound_cursor()`: no parameters
    quoted into the SQL in Python, no planning per run); Django's own cursor elsewhere and while tracing
    (the instrumented cursors are Django's)."""
    bound_cursor = getattr(connection, "bound_cursor", None)
    return bound_cursor() if bound_cursor is not None and not tracing_active() else connection.cursor()


def job_start_batch(*, job_ids: list[str], worker_name: str) -> list[JobRecord]:
    """Mark the waiting records among `job_ids` started (attempt rows included), in the given order.

    Ids whose record is not waiting (cancelled, finished, taken by another worker) are left out.
    """
    return job_start_delivery(job_ids=job_ids, worker_name=worker_name)[0]


def job_start_delivery(
    *,
    job_ids: list[str],
    worker_name: str,
    heavy_types=(),
    heavy_limit: int | None = None,
) -> tuple[list[JobRecord], list[str]]:
    """(records started, in the given order; ids left waiting because of `heavy_limit`), one statement.

    `heavy_limit` bounds the slots the started jobs take: one for all the jobs of a type not in
    `heavy_types` (they run one after another), one for each heavy job; the ids past the first that would
    exceed it are deferred. Ids whose record is not waiting are in neither list.
    """
    # The same id twice in one pop (pushed twice, e.g. by two reconcilers) must run once.
    job_ids = list(dict.fromkeys(str(i) for i in job_ids))
    if not job_ids:
        return [], []
    if connection.vendor != "postgresql":
        return [job for job in (_start_one(job_id=i, worker_name=worker_name) for i in job_ids) if job is not None], []
    now = timezone.now()
    limited = heavy_limit is not None and heavy_limit < len(job_ids)
    with statement_cursor(connection) as cursor:
        cursor.execute(
            START_SQL if limited else START_ALL_SQL,
            {
                "heavy": list(heavy_types),
                "ids": job_ids,
                "waiting": _WAITING,
                "due": now + DUE_TOLERANCE,
                "limit": heavy_limit,
                "started": JobStatus.STARTED,
                "now": now,
                "worker": worker_name,
                "running": JobAttempt.Outcome.RUNNING,
            },
        )
        rows = cursor.fetchall()
    deferred = list(rows[0][0] or []) if rows else []
    by_id = {}
    for row in rows:
        if row[1] is None:
            continue  # nothing started: the one row (of START_SQL) only carries `deferred`
        values = list(row[1:])
        for index, convert in _CONVERTERS:
            values[index] = convert(values[index], None, connection)
        # Model.from_db, without the per-query set-up of a RawQuerySet.
        job = JobRecord.from_db(connection.alias, _ATTNAMES, values)
        by_id[str(job.pk)] = job
    return [by_id[i] for i in job_ids if i in by_id], deferred


def job_complete_batch(*, outcomes: list[tuple[JobRecord, object]]) -> set[str]:
    """Record (job, result) pairs as completed; returns the ids completed.

    A record cancelled meanwhile keeps its status; its attempt is closed as cancelled (as job_complete).
    """
    if not outcomes:
        return set()
    if connection.vendor != "postgresql":
        return {str(job.pk) for job, result in outcomes if _complete_one(job=job, result=result)}
    now = timezone.now()
    with statement_cursor(connection) as cursor:
        cursor.execute(
            COMPLETE_SQL,
            [
                [str(job.pk) for job, _ in outcomes],
                [job.attempts for job, _ in outcomes],
                # SQL NULL for None, like JSONField(null=True) stores it.
                [None if result is None else json.dumps(result) for _, result in outcomes],
                JobStatus.COMPLETED,
                now,
                JobStatus.STARTED,
                JobAttempt.Outcome.CANCELLED,
                JobAttempt.Outcome.COMPLETED,
                now,
                JobAttempt.Outcome.RUNNING,
            ],
        )
        done = {str(row[0]) for row in cursor.fetchall()}
    for job, result in outcomes:
        if str(job.pk) in done:
            job.status, job.result, job.finished_at = JobStatus.COMPLETED, result, now
    return done


def _start_one(*, job_id, worker_name: str) -> JobRecord | None:
    """The ORM form of START_SQL for one job (databases without data-modifying CTEs)."""
    now = timezone.now()
    due = Q(scheduled_for__isnull=True) | Q(scheduled_for__lte=now + DUE_TOLERANCE)
    with transaction.atomic():
        started = JobRecord.objects.filter(due, pk=job_id, status__in=WAITING_STATUSES).update(
            status=JobStatus.STARTED,
            attempts=F("attempts") + 1,
            started_at=now,
            worker_name=worker_name,
            progress=None,
            updated_at=now,
        )
        if not started:
            return None
        job = JobRecord.objects.get(pk=job_id)
        JobAttempt.objects.create(job=job, number=job.attempts, worker_name=worker_name, started_at=now)
    return job


def _complete_one(*, job: JobRecord, result) -> bool:
    """The ORM form of COMPLETE_SQL for one job."""
    now = timezone.now()
    with transaction.atomic():
        done = JobRecord.objects.filter(pk=job.pk, status=JobStatus.STARTED, attempts=job.attempts).update(
            status=JobStatus.COMPLETED, result=result, finished_at=now, scheduled_for=None
        )
        outcome = JobAttempt.Outcome.COMPLETED if done else JobAttempt.Outcome.CANCELLED
        JobAttempt.objects.filter(job=job, number=job.attempts).update(outcome=outcome, finished_at=now)
    if done:
        job.status, job.result, job.finished_at = JobStatus.COMPLETED, result, now
    return bool(done)
