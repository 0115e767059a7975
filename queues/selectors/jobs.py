"""Reads of the job ledger: who may see which job, the fence of an attempt, counts for the admin."""

from __future__ import annotations

import json
import re
import uuid

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connection
from django.db.models import QuerySet

from queues.constants import WAITING_STATUSES, JobStatus
from queues.models import JobRecord
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


def job_waiting_exists(*, job_type: str) -> bool:
    """Whether a record of `job_type` waits to run (queued, scheduled or retrying)."""
    return JobRecord.objects.filter(job_type=job_type, status__in=WAITING_STATUSES).exists()


def job_attempt_is_current(*, job_id, attempt: int) -> bool:
    """Whether `attempt` is the running attempt of the job (the fence every late write is checked against)."""
    return JobRecord.objects.filter(pk=job_id, status=JobStatus.STARTED, attempts=attempt).exists()


def job_attempts_superseded(*, attempts: dict[str, int]) -> set[str]:
    """Of {job id: attempt} in flight, the ids whose attempt is no longer current (one query for all)."""
    if not attempts:
        return set()
    if connection.vendor == "postgresql":
        # The runtime asks every 0.25 s for every job in flight (a thousand replies): one prepared-shape
        # statement that returns only the rare superseded ids, no ORM query built each time.
        with connection.cursor() as cursor:
            cursor.execute(_SUPERSEDED_SQL, [list(attempts), list(attempts.values()), JobStatus.STARTED])
            return {str(row[0]) for row in cursor.fetchall()}
    current = set(
        JobRecord.objects.filter(pk__in=list(attempts), status=JobStatus.STARTED).values_list("pk", "attempts")
    )
    return {job_id for job_id, attempt in attempts.items() if (_uuid(job_id), attempt) not in current}


_SUPERSEDED_SQL = f"""
SELECT t.id FROM unnest(%s::uuid[], %s::int[]) AS t(id, attempts)
  LEFT JOIN {JobRecord._meta.db_table} AS j ON j.id = t.id AND j.status = %s AND j.attempts = t.attempts
 WHERE j.id IS NULL
"""


def _uuid(value):
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


# Above this many rows (the planner's estimate) the admin shows an estimate instead of counting.
ESTIMATE_THRESHOLD = 10_000


def queryset_count_estimate(queryset) -> tuple[int, bool]:
    """(count, estimated): the planner's row estimate when it is large, an exact COUNT otherwise."""
    if connection.vendor != "postgresql":
        return queryset.count(), False
    plan = json.loads(queryset.order_by().explain(format="json"))
    rows = int(plan[0]["Plan"]["Plan Rows"])
    if rows >= ESTIMATE_THRESHOLD:
        return rows, True
    return queryset.count(), False
