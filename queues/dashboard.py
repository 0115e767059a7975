"""Reads behind the admin's queue dashboard: ledger counts, last-hour throughput and latency, workers.

Every figure comes from the ledger (PostgreSQL) except what only Redis knows: the lists' backlog,
whether a queue is paused, and the workers listening. Nothing here writes.

"Last hour" figures select records created within LOOKBACK (the created_at index) and then filter on
finish time, because finished_at is not indexed: a job created earlier than LOOKBACK that finishes
within the hour (an old job retried by staff) is not counted.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count, Min
from django.db.models.functions import TruncMinute
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from queues.constants import JobStatus, QueueName, base_queue_name
from queues.models import JobAttempt, JobRecord
from queues.redis import get_connection, get_rq_queues
from queues.worker import alive_key, paused_key

LOOKBACK = dt.timedelta(hours=24)
WINDOW = dt.timedelta(hours=1)
LEDGER_STATUSES = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.RETRYING, JobStatus.FAILED)
# Without percentile_cont (SQLite) the percentiles are computed in Python over at most this many rows.
PYTHON_PERCENTILE_ROWS = 5000
CHART_WIDTH, CHART_HEIGHT, CHART_MINUTES = 240, 48, 60


@dataclass
class ChartBar:
    x: float
    completed_y: float
    completed_h: float
    failed_y: float
    failed_h: float
    minute: str
    completed: int
    failed: int


@dataclass
class QueueFigures:
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    completed_last_hour: int = 0
    failed_last_hour: int = 0
    duration_p50: float | None = None
    duration_p95: float | None = None
    wait_p50: float | None = None
    wait_p95: float | None = None
    oldest_queued_age: float | None = None
    paused: dict | None = None
    redis: dict[str, int] | None = None
    chart: list[ChartBar] = field(default_factory=list)
    chart_peak: int = 0

    @property
    def completed_per_minute(self) -> float:
        return self.completed_last_hour / 60

    @property
    def failed_per_minute(self) -> float:
        return self.failed_last_hour / 60


def _percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as PostgreSQL's percentile_cont."""
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def queue_ledger_counts() -> dict[str, dict[str, int]]:
    """Per queue, records waiting, running and failed (the (status, queue) index serves it)."""
    counts = {q: {s: 0 for s in LEDGER_STATUSES} for q in QueueName.values}
    rows = JobRecord.objects.filter(status__in=LEDGER_STATUSES).values("queue", "status").annotate(n=Count("id"))
    for row in rows.order_by():
        if row["queue"] in counts:
            counts[row["queue"]][row["status"]] = row["n"]
    return counts


def queue_oldest_queued() -> dict[str, dt.datetime]:
    rows = JobRecord.objects.filter(status=JobStatus.QUEUED).values("queue").annotate(oldest=Min("created_at"))
    return {row["queue"]: row["oldest"] for row in rows.order_by()}


def queue_throughput(*, now: dt.datetime) -> dict[str, dict[dt.datetime, dict[str, int]]]:
    """Per queue and minute of the last hour: records completed and failed."""
    since = now - WINDOW
    rows = (
        JobRecord.objects.filter(
            created_at__gte=now - LOOKBACK, finished_at__gte=since,
            status__in=[JobStatus.COMPLETED, JobStatus.FAILED],
        )
        .annotate(minute=TruncMinute("finished_at"))
        .values("queue", "status", "minute")
        .annotate(n=Count("id"))
        .order_by()
    )
    series: dict[str, dict[dt.datetime, dict[str, int]]] = {q: {} for q in QueueName.values}
    for row in rows:
        bucket = series.setdefault(row["queue"], {}).setdefault(row["minute"], {"completed": 0, "failed": 0})
        bucket[row["status"]] += row["n"]
    return series


_PG_LATENCY_SQL = """
SELECT j.queue,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM a.finished_at - a.started_at)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM a.finished_at - a.started_at))
FROM {attempt} a JOIN {job} j ON j.id = a.job_id
WHERE j.created_at >= %s AND a.finished_at >= %s AND a.outcome <> 'running'
GROUP BY j.queue
"""
_PG_WAIT_SQL = """
SELECT j.queue,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY GREATEST(EXTRACT(EPOCH FROM a.started_at - j.created_at), 0)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY GREATEST(EXTRACT(EPOCH FROM a.started_at - j.created_at), 0))
FROM {attempt} a JOIN {job} j ON j.id = a.job_id
WHERE j.created_at >= %s AND a.started_at >= %s AND a.number = 1
GROUP BY j.queue
"""


def queue_latency(*, now: dt.datetime) -> dict[str, dict[str, float | None]]:
    """p50/p95 of attempt run time (attempts finished in the last hour) and of the wait before a
    job's first attempt (first attempts started in the last hour), per queue.

    Wait is measured from creation: the ledger clears `scheduled_for` when a job finishes, so for a
    delayed job it includes the requested delay.
    """
    since, lookback = now - WINDOW, now - LOOKBACK
    out = {q: {"duration_p50": None, "duration_p95": None, "wait_p50": None, "wait_p95": None}
           for q in QueueName.values}
    tables = {"attempt": JobAttempt._meta.db_table, "job": JobRecord._meta.db_table}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for sql, prefix in ((_PG_LATENCY_SQL, "duration"), (_PG_WAIT_SQL, "wait")):
                cursor.execute(sql.format(**tables), [lookback, since])
                for queue, p50, p95 in cursor.fetchall():
                    if queue in out:
                        out[queue][f"{prefix}_p50"], out[queue][f"{prefix}_p95"] = p50, p95
        return out
    attempts = JobAttempt.objects.filter(job__created_at__gte=lookback).select_related(None)
    durations: dict[str, list[float]] = {}
    for queue, started, finished in attempts.filter(finished_at__gte=since).exclude(
        outcome=JobAttempt.Outcome.RUNNING
    ).values_list("job__queue", "started_at", "finished_at")[:PYTHON_PERCENTILE_ROWS]:
        durations.setdefault(queue, []).append((finished - started).total_seconds())
    waits: dict[str, list[float]] = {}
    for queue, started, created in attempts.filter(started_at__gte=since, number=1).values_list(
        "job__queue", "started_at", "job__created_at"
    )[:PYTHON_PERCENTILE_ROWS]:
        waits.setdefault(queue, []).append(max((started - created).total_seconds(), 0.0))
    for queue in out:
        out[queue].update(
            duration_p50=_percentile(durations.get(queue, []), 0.5),
            duration_p95=_percentile(durations.get(queue, []), 0.95),
            wait_p50=_percentile(waits.get(queue, []), 0.5),
            wait_p95=_percentile(waits.get(queue, []), 0.95),
        )
    return out


def _chart(series: dict[dt.datetime, dict[str, int]], *, now: dt.datetime) -> tuple[list[ChartBar], int]:
    """One bar per minute of the last hour: completed stacked on failed, scaled to the busiest minute."""
    end = now.replace(second=0, microsecond=0)
    minutes = [end - dt.timedelta(minutes=CHART_MINUTES - 1 - i) for i in range(CHART_MINUTES)]
    peak = max((sum(b.values()) for b in series.values()), default=0)
    step = CHART_WIDTH / CHART_MINUTES
    bars = []
    for i, minute in enumerate(minutes):
        bucket = series.get(minute, {"completed": 0, "failed": 0})
        scale = (CHART_HEIGHT / peak) if peak else 0
        failed_h = bucket["failed"] * scale
        completed_h = bucket["completed"] * scale
        bars.append(ChartBar(
            x=round(i * step, 2), failed_h=round(failed_h, 2), failed_y=round(CHART_HEIGHT - failed_h, 2),
            completed_h=round(completed_h, 2), completed_y=round(CHART_HEIGHT - failed_h - completed_h, 2),
            minute=minute.strftime("%H:%M"), completed=bucket["completed"], failed=bucket["failed"],
        ))
    return bars, peak


def queue_redis_state() -> tuple[dict[str, dict], dict[str, dict | None], str]:
    """What Redis holds per queue (backlog and RQ registries) and the pause flags; error text if down."""
    state: dict[str, dict] = {}
    paused: dict[str, dict | None] = {q: None for q in QueueName.values}
    try:
        conn = get_connection()
        for name in QueueName.values:
            rq_queues = get_rq_queues(name)
            state[name] = {
                "waiting": sum(q.count for q in rq_queues),
                "scheduled": sum(ScheduledJobRegistry(queue=q).count for q in rq_queues),
                "started": sum(StartedJobRegistry(queue=q).count for q in rq_queues),
                "failed": sum(FailedJobRegistry(queue=q).count for q in rq_queues),
            }
            raw = conn.get(paused_key(name))
            if raw is not None:
                try:
                    paused[name] = json.loads(raw)
                except ValueError:
                    paused[name] = {"at": "", "by": "", "reason": ""}
    except (RedisError, OSError) as exc:
        return {}, paused, f"Redis is unreachable: {exc}"
    return state, paused, ""


def worker_list() -> tuple[list[dict], str]:
    """Workers registered in Redis, with their state, current job and last heartbeat."""
    try:
        conn = get_connection()
        workers = Worker.all(connection=conn)
        now = timezone.now()
        rows = []
        for worker in sorted(workers, key=lambda w: w.name):
            heartbeat = worker.last_heartbeat
            if heartbeat is not None and timezone.is_naive(heartbeat):
                heartbeat = timezone.make_aware(heartbeat, dt.timezone.utc)
            rows.append({
                "name": worker.name,
                "host": worker.hostname or "",
                "pid": worker.pid,
                "state": worker.get_state(),
                "current_job": worker.get_current_job_id() or "",
                "last_heartbeat": heartbeat,
                "heartbeat_age": (now - heartbeat).total_seconds() if heartbeat else None,
                "alive": bool(conn.exists(alive_key(worker.name))),
                "queues": sorted({base_queue_name(n) for n in worker.queue_names()}),
                "successful": worker.successful_job_count,
                "failed": worker.failed_job_count,
            })
    except (RedisError, OSError) as exc:
        return [], f"Redis is unreachable: {exc}"
    return rows, ""


def queue_dashboard(*, now: dt.datetime | None = None) -> dict:
    """Everything the dashboard shows, computed once per page view."""
    now = now or timezone.now()
    counts = queue_ledger_counts()
    oldest = queue_oldest_queued()
    throughput = queue_throughput(now=now)
    latency = queue_latency(now=now)
    redis_state, paused, redis_error = queue_redis_state()
    workers, workers_error = worker_list()
    queues = []
    for name in QueueName.values:
        series = throughput.get(name, {})
        chart, peak = _chart(series, now=now)
        figures = QueueFigures(
            name=name, counts=counts[name],
            completed_last_hour=sum(b["completed"] for b in series.values()),
            failed_last_hour=sum(b["failed"] for b in series.values()),
            oldest_queued_age=(now - oldest[name]).total_seconds() if name in oldest else None,
            paused=paused[name], redis=redis_state.get(name), chart=chart, chart_peak=peak,
            **latency[name],
        )
        queues.append(figures)
    return {
        "now": now, "queues": queues, "workers": workers,
        "redis_error": redis_error or workers_error,
        "percentiles_in_database": connection.vendor == "postgresql",
        "chart_width": CHART_WIDTH, "chart_height": CHART_HEIGHT,
    }
