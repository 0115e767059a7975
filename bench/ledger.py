"""Bench set-up helpers for the job ledger: clean tables, many waiting jobs at once, timings.

Preparing thousands of jobs one `job_enqueue` at a time would take longer than the measurement, so
`ledger_jobs_prepare` writes the same records and RQ jobs `job_enqueue` + `job_push` would, in bulk.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from rq import Queue

from queues.constants import JobStatus
from queues.definitions import registry
from queues.models import JobRecord
from queues.redis import get_connection
from queues.services import RUNNER


def ledger_clear() -> None:
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE queues_jobattempt, queues_jobrecord CASCADE" if connection.vendor == "postgresql"
                       else "DELETE FROM queues_jobattempt")
    if connection.vendor != "postgresql":
        JobRecord.objects.all().delete()


def ledger_jobs_prepare(*, job_type: str, count: int, payload: dict | None = None) -> list[str]:
    definition = registry.get(job_type)
    records = [
        JobRecord(job_type=job_type, queue=definition.queue, payload=payload or {},
                  max_attempts=definition.retry.max_attempts, status=JobStatus.QUEUED)
        for _ in range(count)
    ]
    JobRecord.objects.bulk_create(records, batch_size=1000)
    conn = get_connection()
    queue = Queue(definition.queue, connection=conn)
    ttl = definition.result_ttl or settings.JOB_RESULT_TTL
    for start in range(0, count, 500):
        with conn.pipeline() as pipe:
            queue.enqueue_many([
                Queue.prepare_data(RUNNER, args=(str(r.id),), job_id=str(r.id), timeout=definition.timeout,
                                   result_ttl=ttl, failure_ttl=ttl, description=job_type,
                                   meta={"job_type": job_type})
                for r in records[start:start + 500]
            ], pipeline=pipe)
            pipe.execute()
    return [str(r.id) for r in records]


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
