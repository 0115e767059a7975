"""Reads of the job ledger and of queue state."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import connections
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


def queryset_periods_with_rows(*, queryset: QuerySet, field: str, periods: list[tuple]) -> list[bool]:
    """For each [start, end) period, whether `queryset` has a row with `field` in it.

    One statement of `EXISTS (… LIMIT 1)` probes: each is a short range scan of `field`'s index that
    stops at the first matching row, so the cost is the number of periods (at most 31), not the rows.
    """
    if not periods:
        return []
    parts, params = [], []
    base = queryset.order_by()
    for start, end in periods:
        probe = base.filter(**{f"{field}__gte": start, f"{field}__lt": end}).values("pk")[:1]
        sql, probe_params = probe.query.get_compiler(using=queryset.db).as_sql()
        parts.append(f"EXISTS ({sql})")
        params.extend(probe_params)
    with connections[queryset.db].cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(parts), params)
        return [bool(value) for value in cursor.fetchone()]
