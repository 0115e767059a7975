"""Pushes to fair-shared queues (settings.FAIR_QUEUES): a job waits in its tenant's line (queues.fairness)
instead of its queue's plain RQ list, so workers serve tenants in turn within each priority.

The RQ job hash is still written (the forking worker runs from it; the admin's RQ views show it); only the
id's place differs. Ids that still land on a fair queue's plain list — pushed by an older version, by
RQ's own scheduler (`--with-scheduler`), or by someone using rq directly — are moved into their tenant's
line by the workers (`fair_plain_drain`, and the runtime's pop), never run past the per-tenant cap.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError
from rq import Queue

from queues.constants import PRIORITY_ORDER, base_queue_name, rq_queue_name
from queues.fairness import fair_push_many, fair_remove
from queues.models import JobRecord, is_job_id

logger = logging.getLogger(__name__)

DRAIN_BATCH = 100  # ids moved from a plain list per pass


def queue_is_fair(queue: str) -> bool:
    return base_queue_name(queue) in settings.FAIR_QUEUES


def fair_tenants_of(job_ids) -> dict[str, str]:
    """Tenant of each id the ledger knows (ids it does not know wait under the empty tenant)."""
    ids = [i for i in job_ids if is_job_id(i)]
    return {str(pk): tenant for pk, tenant in JobRecord.objects.filter(pk__in=ids).values_list("pk", "tenant")}


def fair_push_ids(*, conn, queue: str, items) -> int:
    """Put (priority, job id) pairs into their tenants' lines, tenants read from the ledger."""
    items = list(items)
    if not items:
        return 0
    try:
        tenants = fair_tenants_of([job_id for _, job_id in items])
    except DatabaseError:
        # The ledger is unreachable: they wait under the empty tenant rather than nowhere (a worker
        # cannot start them before the ledger answers anyway).
        logger.warning("tenants of %s job(s) unknown (database unavailable); queued as the empty tenant", len(items))
        tenants = {}
    fair_push_many(conn=conn, queue=queue, items=[(p, tenants.get(j, ""), j) for p, j in items])
    return len(items)


def fair_plain_drain(*, conn, queue: str, limit: int = DRAIN_BATCH) -> int:
    """Move ids waiting on a fair queue's plain RQ lists into their tenants' lines; returns how many.

    An id popped here and lost before its push (a crash in between) is still waiting in the ledger:
    the reconciler pushes it again."""
    items = []
    for priority in PRIORITY_ORDER:
        key = Queue.redis_queue_namespace_prefix + rq_queue_name(queue, priority)
        items += [(priority, i.decode()) for i in conn.lpop(key, limit) or []]
    return fair_push_ids(conn=conn, queue=queue, items=items)


def fair_job_remove(*, conn, job: JobRecord) -> bool:
    """A waiting job of a fair queue leaves its tenant's line (cancelled or deleted before it ran)."""
    return fair_remove(conn=conn, queue=job.queue, priority=job.priority, tenant=job.tenant, job_id=str(job.pk))
