"""What /metrics exposes: recorded metrics (every process's, or this one's) plus gauges read from Redis.

The Redis figures are computed at scrape time, in two pipelined round trips plus one per worker,
without side effects: registry sizes are read with ZCARD (RQ's `.count` would run a cleanup).
Nothing here reads PostgreSQL, so /metrics keeps answering while the database is down.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import str_to_date

from queues.constants import PRIORITY_ORDER, QueueName, base_queue_name, rq_queue_name
from queues.fairness import fair_waiting_heads
from queues.metrics import SCRAPE_GAUGES
from queues.redis import get_connection, redis_ping

logger = logging.getLogger(__name__)

QUEUE_STATES = ("queued", "scheduled", "started", "failed")
WORKER_STATES = ("idle", "busy", "started", "suspended")
_REGISTRY_TEMPLATES = {
    "scheduled": ScheduledJobRegistry.key_template,
    "started": StartedJobRegistry.key_template,
    "failed": FailedJobRegistry.key_template,
}


def _queue_key(name: str) -> str:
    return f"{Queue.redis_queue_namespace_prefix}{name}"


def queue_depths(conn) -> dict:
    """Per base queue: jobs by state (all priority lists summed), oldest due job's age, workers.

    Returns {"queues": {queue: {"queued", "scheduled", "started", "failed", "oldestAgeSeconds",
    "workers"}}, "workers": {state: n}, "workerList": [...]}.
    """
    now = time.time()
    lists = {q: [rq_queue_name(q, p) for p in PRIORITY_ORDER] for q in QueueName.values}
    pipe = conn.pipeline(transaction=False)
    plan = []
    for queue, names in lists.items():
        for name in names:
            pipe.llen(_queue_key(name))
            plan.append((queue, "queued"))
            for state, template in _REGISTRY_TEMPLATES.items():
                pipe.zcard(template.format(name))
                plan.append((queue, state))
            pipe.lindex(_queue_key(name), 0)
            plan.append((queue, "head"))
            # Scheduled jobs whose due time has passed wait for the scheduler: they count as waiting too.
            pipe.zrangebyscore(_REGISTRY_TEMPLATES["scheduled"].format(name), "-inf", now, start=0, num=1,
                               withscores=True)
            plan.append((queue, "overdue"))
    result = {q: {s: 0 for s in QUEUE_STATES} | {"oldestAgeSeconds": 0.0, "workers": 0} for q in lists}
    heads = []
    for (queue, state), value in zip(plan, pipe.execute()):
        if state == "head":
            if value:
                heads.append((queue, value.decode() if isinstance(value, bytes) else value))
        elif state == "overdue":
            if value:
                age = max(now - value[0][1], 0.0)
                result[queue]["oldestAgeSeconds"] = max(result[queue]["oldestAgeSeconds"], age)
        else:
            result[queue][state] += int(value)
    for queue in settings.FAIR_QUEUES:  # their jobs wait in tenants' lines (queues.fairness), not RQ's lists
        waiting, fair_heads = fair_waiting_heads(conn=conn, queue=queue)
        result[queue]["queued"] += waiting
        heads += [(queue, job_id) for job_id in fair_heads]
    if heads:
        pipe = conn.pipeline(transaction=False)
        for _, job_id in heads:
            pipe.hget(f"rq:job:{job_id}", "enqueued_at")
        for (queue, _), enqueued_at in zip(heads, pipe.execute()):
            if not enqueued_at:
                continue
            try:
                age = now - str_to_date(enqueued_at).timestamp()
            except ValueError:
                continue
            result[queue]["oldestAgeSeconds"] = max(result[queue]["oldestAgeSeconds"], max(age, 0.0))

    by_state = {s: 0 for s in WORKER_STATES}
    worker_list = []
    for worker in Worker.all(connection=conn):
        state = str(getattr(worker.get_state(), "value", worker.get_state()))
        by_state[state] = by_state.get(state, 0) + 1
        served = sorted({base_queue_name(n) for n in worker.queue_names()})
        for queue in served:
            if queue in result:
                result[queue]["workers"] += 1
        worker_list.append({
            "name": worker.name, "state": state, "queues": served, "pid": worker.pid,
            "hostname": worker.hostname, "currentJob": worker.get_current_job_id(),
            "successfulJobs": worker.successful_job_count, "failedJobs": worker.failed_job_count,
            "lastHeartbeat": _iso(worker.last_heartbeat),
        })
    return {"queues": result, "workers": by_state, "workerList": worker_list}


def _iso(value) -> str | None:
    return value.astimezone(dt.timezone.utc).isoformat() if value else None


class QueueCollector:
    """slimy_queue_jobs{queue,state}, slimy_queue_oldest_job_age_seconds, slimy_queue_workers, slimy_workers."""

    def collect(self):
        up = GaugeMetricFamily("slimy_redis_up", SCRAPE_GAUGES["slimy_redis_up"])
        depths = None
        if redis_ping(timeout=1.0):
            try:
                depths = queue_depths(get_connection())
            except (RedisError, OSError):
                logger.warning("queue gauges unavailable: Redis failed during the scrape", exc_info=True)
        up.add_metric([], 1 if depths is not None else 0)
        yield up
        if depths is None:
            return
        jobs = GaugeMetricFamily("slimy_queue_jobs", SCRAPE_GAUGES["slimy_queue_jobs"], labels=["queue", "state"])
        age = GaugeMetricFamily("slimy_queue_oldest_job_age_seconds",
                                SCRAPE_GAUGES["slimy_queue_oldest_job_age_seconds"], labels=["queue"])
        served = GaugeMetricFamily("slimy_queue_workers", SCRAPE_GAUGES["slimy_queue_workers"], labels=["queue"])
        for queue, figures in depths["queues"].items():
            for state in QUEUE_STATES:
                jobs.add_metric([queue, state], figures[state])
            age.add_metric([queue], round(figures["oldestAgeSeconds"], 3))
            served.add_metric([queue], figures["workers"])
        workers = GaugeMetricFamily("slimy_workers", SCRAPE_GAUGES["slimy_workers"], labels=["state"])
        for state, n in depths["workers"].items():
            workers.add_metric([state], n)
        yield from (jobs, age, served, workers)
        yield from tenant_gauges(get_connection())


def tenant_gauges(conn) -> list:
    """Per-tenant in-flight and waiting jobs of the fair-shared queues. Label values are bounded: the
    METRICS_TENANT_TOP_N busiest tenants per queue by name, every other one summed as tenant="other"."""
    from queues.fairness import fair_tenant_loads, tenant_loads_top

    inflight = GaugeMetricFamily("slimy_tenant_inflight_jobs", SCRAPE_GAUGES["slimy_tenant_inflight_jobs"],
                                 labels=["queue", "tenant"])
    waiting = GaugeMetricFamily("slimy_tenant_waiting_jobs", SCRAPE_GAUGES["slimy_tenant_waiting_jobs"],
                                labels=["queue", "tenant"])
    try:
        for queue in settings.FAIR_QUEUES:
            loads = fair_tenant_loads(conn=conn, queue=queue)
            for load in tenant_loads_top(loads, top=settings.METRICS_TENANT_TOP_N):
                inflight.add_metric([queue, load.tenant], load.inflight)
                waiting.add_metric([queue, load.tenant], load.waiting)
    except (RedisError, OSError):
        logger.warning("tenant gauges unavailable: Redis failed during the scrape", exc_info=True)
        return []
    return [inflight, waiting]


class _ThisProcess:
    """This process's own registry (used when there is no multi-process directory)."""

    def collect(self):
        return REGISTRY.collect()


def recorded_registry() -> CollectorRegistry:
    """Counters and histograms as recorded: summed over every process when PROMETHEUS_MULTIPROC_DIR is set."""
    registry = CollectorRegistry(auto_describe=False)
    path = settings.PROMETHEUS_MULTIPROC_DIR
    if path:
        multiprocess.MultiProcessCollector(registry, path=str(path))
    else:
        registry.register(_ThisProcess())
    return registry


def scrape_registry() -> CollectorRegistry:
    registry = recorded_registry()
    registry.register(QueueCollector())
    return registry


def recorded_samples() -> dict[str, list]:
    """Sample name → [(labels, value)], from the same source /metrics uses."""
    samples: dict[str, list] = {}
    for family in recorded_registry().collect():
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples
