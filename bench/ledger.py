"""Bench set-up helpers for the job ledger: clean tables, many waiting jobs at once, timings.

Preparing thousands of jobs one `job_enqueue` at a time would take longer than the measurement, so
`ledger_jobs_prepare` writes the same records in bulk and pushes them with `job_push`.
"""

from __future__ import annotations

from django.db import connection

from queues.constants import JobStatus
from queues.definitions import registry
from queues.models import JobRecord
from queues.services import job_push


def ledger_clear() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE queues_jobattempt, queues_jobrecord CASCADE"
            if connection.vendor == "postgresql"
            else "DELETE FROM queues_jobattempt"
        )
    if connection.vendor != "postgresql":
        JobRecord.objects.all().delete()


def ledger_jobs_prepare(
    *,
    job_type: str,
    count: int,
    payload: dict | None = None,
    payloads: list[dict] | None = None,
    owner=None,
    push: bool = True,
) -> list[str]:
    """Write `count` queued records in bulk, then push each with `job_push` (the service `job_enqueue`
    calls on commit), so the jobs reach Redis exactly as the runtime expects them, whichever it is."""
    definition = registry.get(job_type)
    if payloads is not None and len(payloads) != count:
        raise ValueError("payloads must have `count` items")
    records = [
        JobRecord(
            job_type=job_type,
            queue=definition.queue,
            owner=owner,
            payload=body,
            max_attempts=definition.retry.max_attempts,
            status=JobStatus.QUEUED,
            tenant=definition.tenant_of(body, owner.pk if owner is not None else None),
        )
        for body in (payloads[i] if payloads is not None else (payload or {}) for i in range(count))
    ]
    JobRecord.objects.bulk_create(records, batch_size=1000)
    if push:
        ledger_jobs_push(records=records)
    return [str(r.id) for r in records]


def ledger_jobs_push(*, records) -> None:
    for record in records:
        job_push(job=record)


def ledger_window(*, job_ids=None) -> tuple[int, float]:
    """(completed jobs, seconds from the first start to the last finish) according to the ledger."""
    qs = JobRecord.objects.filter(status=JobStatus.COMPLETED)
    if job_ids is not None:
        qs = qs.filter(pk__in=job_ids)
    from django.db.models import Count, Max, Min

    agg = qs.aggregate(n=Count("id"), first=Min("started_at"), last=Max("finished_at"))
    if not agg["n"]:
        return 0, 0.0
    return agg["n"], (agg["last"] - agg["first"]).total_seconds()
