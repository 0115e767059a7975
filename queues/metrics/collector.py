"""What /metrics exposes: recorded metrics (every process's, or this one's) plus gauges read from Redis.

The Redis figures are computed at scrape time by the one reader of queue state
(queues.selectors.queue_state): pipelined, without side effects.
Nothing here reads PostgreSQL, so /metrics keeps answering while the database is down.
"""

from __future__ import annotations

import logging

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily
from redis.exceptions import RedisError

from queues.connections import get_connection, redis_ping
from queues.metrics import SCRAPE_GAUGES
from queues.selectors.queue_state import QUEUE_STATES, queue_depths

logger = logging.getLogger(__name__)


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
        age = GaugeMetricFamily(
            "slimy_queue_oldest_job_age_seconds", SCRAPE_GAUGES["slimy_queue_oldest_job_age_seconds"], labels=["queue"]
        )
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

    inflight = GaugeMetricFamily(
        "slimy_tenant_inflight_jobs", SCRAPE_GAUGES["slimy_tenant_inflight_jobs"], labels=["queue", "tenant"]
    )
    waiting = GaugeMetricFamily(
        "slimy_tenant_waiting_jobs", SCRAPE_GAUGES["slimy_tenant_waiting_jobs"], labels=["queue", "tenant"]
    )
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
