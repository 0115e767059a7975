"""Reads of the job ledger and of queue state."""

from __future__ import annotations

import re
import datetime as dt
import json

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections
from django.db.models import QuerySet
from django.utils import timezone

from queues.constants import PRIORITY_ORDER, JobStatus, QueueName
from queues.fairness import fair_waiting_count
from queues.models import JobRecord
from queues.redis import get_rq_queue
from slimy_site.exceptions import NotFound


class JobNotFound(NotFound):
    code = "job_not_found"
    message = "Job not found."


# Codes written by our typed job errors are snake_case; anything else is an exception class name
# whose message may describe internals (hosts, SQL): owners see a generic message, staff the real one.
_TYPED_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
GENERIC_JOB_ERROR = "The job failed because of an internal error."


def job_error_for_viewer(*, job: JobRecord, viewer) -> dict | None:
    """`{code, message}` of the job's error as `viewer` may see it, or None when there is none.

    The one rule for every API answer that shows a job's error: untyped errors are hidden from
    everyone but staff.
    """
    if not job.error_message:
        return None
    message = job.error_message
    may_see_internals = viewer is not None and user_may_act_on_any_job(user=viewer, action="view")
    if not _TYPED_ERROR_CODE.match(job.error_code or "") and not may_see_internals:
        message = GENERIC_JOB_ERROR
    return {"code": job.error_code, "message": message}


# What a staff member may do to other users' jobs, by the admin's permission for it. Staff without
# the permission are ordinary owners for that action (the admin asks the same: is_staff + permission).
JOB_PERMISSIONS = {
    "view": "queues.view_jobrecord",
    "retry": "queues.retry_jobrecord",
    "cancel": "queues.cancel_jobrecord",
}


def user_may_act_on_any_job(*, user, action: str = "view") -> bool:
    """True when `user` is active staff holding the admin permission for `action` ("view", "retry", "cancel")."""
    return bool(user.is_active and user.is_staff and user.has_perm(JOB_PERMISSIONS[action]))


def job_list_for_user(*, user, action: str = "view") -> QuerySet[JobRecord]:
    """The jobs `user` may `action`: their own, or everyone's with the admin permission for it."""
    qs = JobRecord.objects.all()
    if not user_may_act_on_any_job(user=user, action=action):
        qs = qs.filter(owner=user)
    return qs


def job_get_for_user(*, job_id, user, action: str = "view") -> JobRecord:
    """The job, if `user` owns it or may `action` anyone's; otherwise JobNotFound (never a 403: ids leak nothing)."""
    try:
        return job_list_for_user(user=user, action=action).get(pk=job_id)
    except (JobRecord.DoesNotExist, DjangoValidationError, ValueError, TypeError):
        raise JobNotFound() from None


def job_is_cancelled(*, job_id) -> bool:
    return JobRecord.objects.filter(pk=job_id, status=JobStatus.CANCELLED).exists()


def job_attempt_is_current(*, job_id, attempt: int) -> bool:
    """Whether `attempt` is the running attempt of the job (the fence every late write is checked against)."""
    return JobRecord.objects.filter(pk=job_id, status=JobStatus.STARTED, attempts=attempt).exists()


def job_attempts_superseded(*, attempts: dict[str, int]) -> set[str]:
    """Of {job id: attempt} in flight, the ids whose attempt is no longer current (one query for all)."""
    if not attempts:
        return set()
    if connections["default"].vendor == "postgresql":
        # The runtime asks every 0.25 s for every job in flight (a thousand replies): one prepared-shape
        # statement that returns only the rare superseded ids, no ORM query built each time.
        with connections["default"].cursor() as cursor:
            cursor.execute(_SUPERSEDED_SQL, [list(attempts), list(attempts.values()), JobStatus.STARTED])
            return {str(row[0]) for row in cursor.fetchall()}
    current = set(
        JobRecord.objects.filter(pk__in=list(attempts), status=JobStatus.STARTED)
        .values_list("pk", "attempts")
    )
    return {job_id for job_id, attempt in attempts.items() if (_uuid(job_id), attempt) not in current}


_SUPERSEDED_SQL = f"""
SELECT t.id FROM unnest(%s::uuid[], %s::int[]) AS t(id, attempts)
  LEFT JOIN {JobRecord._meta.db_table} AS j ON j.id = t.id AND j.status = %s AND j.attempts = t.attempts
 WHERE j.id IS NULL
"""


def _uuid(value):
    import uuid

    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def queue_backlog(*, queue: str) -> int:
    """Jobs waiting in Redis for this queue, all priorities (a fair-shared queue's in its tenants' lines)."""
    plain = sum(get_rq_queue(queue, p).count for p in PRIORITY_ORDER)
    if queue not in settings.FAIR_QUEUES:
        return plain
    return plain + fair_waiting_count(conn=get_rq_queue(queue).connection, queue=queue)


def queue_stats() -> dict[str, dict[str, int]]:
    """Per queue: ledger counts by status (the truth) and the Redis backlog."""
    from django.db.models import Count

    stats = {q: {s: 0 for s in JobStatus.values} for q in QueueName.values}
    for row in JobRecord.objects.values("queue", "status").annotate(n=Count("id")).order_by():
        if row["queue"] in stats:
            stats[row["queue"]][row["status"]] = row["n"]
    return stats


# Below this many matching rows (the planner's estimate), one SELECT DISTINCT date_trunc(...) is cheap
# and exact; above it, one EXISTS probe per period is (see queryset_dates_with_rows).
DISTINCT_DATES_MAX_ROWS = 20_000


def _estimated_rows(queryset: QuerySet) -> int:
    if connections[queryset.db].vendor != "postgresql":
        return queryset.count()  # development databases are small
    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def queryset_periods_with_rows(*, queryset: QuerySet, field: str, periods: list[tuple]) -> list[bool]:
    """For each [start, end) period, whether `queryset` has a row with `field` in it.

    One statement of `EXISTS (… LIMIT 1)` probes: with `field` indexed, each stops at the first
    matching row, so dense results cost about one index lookup per period, not a scan of the rows.
    """
    if not periods:
        return []
    base = queryset.order_by()
    # Compiled once with two marker values, then repeated per period (compiling 31 querysets costs
    # more than running them); per-period compiling if the markers do not come out once each.
    marks = (dt.datetime(1901, 2, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc),
             dt.datetime(1901, 2, 3, 4, 5, 6, 8, tzinfo=dt.timezone.utc))
    sql, template = _probe_sql(base, field, marks)
    positions = [template.index(mark) if template.count(mark) == 1 else None for mark in marks]
    parts, params = [], []
    for start, end in periods:
        if None in positions:
            probe_sql, probe_params = _probe_sql(base, field, (start, end))
        else:
            probe_sql, probe_params = sql, list(template)
            probe_params[positions[0]], probe_params[positions[1]] = start, end
        parts.append(f"EXISTS ({probe_sql})")
        params.extend(probe_params)
    with connections[queryset.db].cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        return [bool(value) for value in cursor.fetchone()]


def _probe_sql(base: QuerySet, field: str, period: tuple) -> tuple[str, list]:
    probe = base.filter(**{f"{field}__gte": period[0], f"{field}__lt": period[1]}).values("pk")[:1]
    sql, params = probe.query.get_compiler(using=base.db).as_sql()
    return sql, list(params)


def queryset_dates_with_rows(*, queryset: QuerySet, field: str, kind: str, starts: list[dt.date],
                             end: dt.date) -> list[dt.date]:
    """The `starts` (first days of days, months or years: `kind`) whose period holds rows of `queryset`;
    each period runs to the next start, the last to `end`. Periods are in the current time zone.

    Few matching rows (a selective filter): Django's SELECT DISTINCT over them. Many: EXISTS probes,
    since a DISTINCT would read and sort every row (at 10^6 rows, ~700 ms against <1 ms).
    """
    if not starts:
        return []

    def at(day):
        return timezone.make_aware(dt.datetime.combine(day, dt.time.min))

    within = queryset.filter(**{f"{field}__gte": at(starts[0]), f"{field}__lt": at(end)})
    if _estimated_rows(within) <= DISTINCT_DATES_MAX_ROWS:
        present = set(within.order_by().dates(field, kind))
        return [start for start in starts if start in present]
    bounds = [at(start) for start in starts] + [at(end)]
    found = queryset_periods_with_rows(queryset=within, field=field, periods=list(zip(bounds, bounds[1:])))
    return [start for start, has in zip(starts, found) if has]
