"""Reads of the job ledger and of queue state."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet

from queues.constants import PRIORITY_ORDER, JobStatus, QueueName
from queues.models import JobRecord
from queues.redis import get_rq_queue
from slimy_site.exceptions import NotFound


class JobNotFound(NotFound):
    code = "job_not_found"
    message = "Job not found."


def job_list_for_user(*, user) -> QuerySet[JobRecord]:
    qs = JobRecord.objects.all()
    if not user.is_staff:
        qs = qs.filter(owner=user)
    return qs


def job_get_for_user(*, job_id, user) -> JobRecord:
    """The job, if `user` owns it or is staff; otherwise JobNotFound (never a 403: ids leak nothing)."""
    try:
        return job_list_for_user(user=user).get(pk=job_id)
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
    current = set(
        JobRecord.objects.filter(pk__in=list(attempts), status=JobStatus.STARTED)
        .values_list("pk", "attempts")
    )
    return {job_id for job_id, attempt in attempts.items() if (_uuid(job_id), attempt) not in current}


def _uuid(value):
    import uuid

    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def queue_backlog(*, queue: str) -> int:
    """Jobs waiting in Redis for this queue, all priorities."""
    return sum(get_rq_queue(queue, p).count for p in PRIORITY_ORDER)


def queue_stats() -> dict[str, dict[str, int]]:
    """Per queue: ledger counts by status (the truth) and the Redis backlog."""
    from django.db.models import Count

    stats = {q: {s: 0 for s in JobStatus.values} for q in QueueName.values}
    for row in JobRecord.objects.values("queue", "status").annotate(n=Count("id")).order_by():
        if row["queue"] in stats:
            stats[row["queue"]][row["status"]] = row["n"]
    return stats
