"""Reads behind the admin's queue dashboard: ledger counts, last-hour throughput and latency, workers.

Every figure comes from the ledger (PostgreSQL) except what only Redis knows: the lists' backlog,
whether a queue is paused, and the workers listening (read by queues.selectors.queue_state, the one
reader of queue state). Nothing here writes.

"Last hour" figures select records created within LOOKBACK (the created_at index) and then filter on
finish time, because finished_at is not indexed: a job created earlier than LOOKBACK that finishes
within the hour (an old job retried by staff) is not counted.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count, Min
from django.db.models.functions import TruncMinute
from django.utils import timezone

from queues.constants import JobStatus, QueueName
from queues.models import JobAttempt, JobRecord
from queues.selectors.queue_state import queue_redis_state, worker_list, worker_slots

LOOKBACK = dt.timedelta(hours=24)
WINDOW = dt.timedelta(hours=1)
LEDGER_STATUSES = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED, JobStatus.RETRYING, JobStatus.FAILED)
# Without percentile_cont (SQLite) the percentiles are computed in Python over at most this many rows.
PYTHON_PERCENTILE_ROWS = 5000
CHART_MINUTES = 60
# The SVG's own coordinates (it scales to its box): the plot area leaves room for the axes' labels.
CHART_WIDTH, CHART_HEIGHT = 360, 150
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 40, 350, 10, 126


@dataclass
class ChartBar:
    x: float
    width: float
    completed_y: float
    completed_h: float
    failed_y: float
    failed_h: float
    minute: str
    completed: int
    failed: int


@dataclass
class Chart:
    """A last-hour bar chart in SVG coordinates: bars, y ticks (jobs/min) and x ticks (clock times)."""

    bars: list[ChartBar]
    peak: int
    y_max: int
    y_ticks: list[tuple[float, int]]
    x_ticks: list[tuple[float, str]]
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    left: int = PLOT_LEFT
    right: int = PLOT_RIGHT
    top: int = PLOT_TOP
    bottom: int = PLOT_BOTTOM


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
    axes: Chart | None = None

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
    counts: dict[str, dict[str, int]] = {q: {s: 0 for s in LEDGER_STATUSES} for q in QueueName.values}
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
            created_at__gte=now - LOOKBACK,
            finished_at__gte=since,
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
    out: dict[str, dict[str, float | None]] = {
        q: {"duration_p50": None, "duration_p95": None, "wait_p50": None, "wait_p95": None} for q in QueueName.values
    }
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
    for queue, started, finished in (
        attempts.filter(finished_at__gte=since)
        .exclude(outcome=JobAttempt.Outcome.RUNNING)
        .values_list("job__queue", "started_at", "finished_at")[:PYTHON_PERCENTILE_ROWS]
    ):
        if finished is None:  # excluded by the filter; says so to the type checker
            continue
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


def _nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5 × 10^k (k ≥ 0) not below `value`: round numbers for the y axis."""
    if value <= 1:
        return 1
    magnitude = 1
    while True:
        for step in (1, 2, 5):
            if step * magnitude >= value:
                return step * magnitude
        magnitude *= 10


def _chart(series: dict[dt.datetime, dict[str, int]], *, now: dt.datetime) -> Chart:
    """One bar per minute of the last hour (completed stacked on failed), a y axis in jobs per minute
    from 0 to a round number above the busiest minute, and an x axis marked every 15 minutes."""
    end = now.replace(second=0, microsecond=0)
    minutes = [end - dt.timedelta(minutes=CHART_MINUTES - 1 - i) for i in range(CHART_MINUTES)]
    peak = max((sum(b.values()) for b in series.values()), default=0)
    y_max = _nice_ceiling(peak)
    plot_w, plot_h = PLOT_RIGHT - PLOT_LEFT, PLOT_BOTTOM - PLOT_TOP
    step = plot_w / CHART_MINUTES
    scale = plot_h / y_max
    bars = []
    for i, minute in enumerate(minutes):
        bucket = series.get(minute, {"completed": 0, "failed": 0})
        failed_h = bucket["failed"] * scale
        completed_h = bucket["completed"] * scale
        bars.append(
            ChartBar(
                x=round(PLOT_LEFT + i * step + 0.5, 2),
                width=round(max(step - 1, 1), 2),
                failed_h=round(failed_h, 2),
                failed_y=round(PLOT_BOTTOM - failed_h, 2),
                completed_h=round(completed_h, 2),
                completed_y=round(PLOT_BOTTOM - failed_h - completed_h, 2),
                minute=minute.strftime("%H:%M"),
                completed=bucket["completed"],
                failed=bucket["failed"],
            )
        )
    y_ticks = [(round(PLOT_BOTTOM - v * scale, 2), v) for v in sorted({0, y_max // 2 if y_max > 1 else 0, y_max})]
    x_ticks = [(round(PLOT_LEFT + i * step, 2), minutes[i].strftime("%H:%M")) for i in range(0, CHART_MINUTES, 15)]
    x_ticks.append((PLOT_RIGHT, (end + dt.timedelta(minutes=1)).strftime("%H:%M")))
    return Chart(bars=bars, peak=peak, y_max=y_max, y_ticks=y_ticks, x_ticks=x_ticks)


def _by_host(rows: list[dict]) -> list[dict]:
    hosts: dict[str, list[dict]] = {}
    for row in rows:
        hosts.setdefault(row["host"] or "(unknown host)", []).append(row)
    return [{"host": host, "processes": processes} for host, processes in sorted(hosts.items())]


def queue_dashboard(*, now: dt.datetime | None = None) -> dict:
    """Everything the dashboard shows, computed once per page view."""
    now = now or timezone.now()
    counts = queue_ledger_counts()
    oldest = queue_oldest_queued()
    throughput = queue_throughput(now=now)
    latency = queue_latency(now=now)
    redis_state, paused, redis_error = queue_redis_state()
    processes, slots_error = worker_slots()
    # The runtime's per-process slots when it reports them; otherwise what RQ knows of each worker.
    workers, workers_error = ([], "") if processes else worker_list()
    queues = []
    for name in QueueName.values:
        series = throughput.get(name, {})
        chart = _chart(series, now=now)
        figures = QueueFigures(
            name=name,
            counts=counts[name],
            completed_last_hour=sum(b["completed"] for b in series.values()),
            failed_last_hour=sum(b["failed"] for b in series.values()),
            oldest_queued_age=(now - oldest[name]).total_seconds() if name in oldest else None,
            paused=paused[name],
            redis=redis_state.get(name),
            chart=chart.bars,
            chart_peak=chart.peak,
            axes=chart,
            **latency[name],
        )
        queues.append(figures)
    return {
        "now": now,
        "queues": queues,
        "workers": workers,
        "worker_hosts": _by_host(processes or workers),
        "workers_report_slots": bool(processes),
        "worker_count": len(processes or workers),
        "redis_error": redis_error or slots_error or workers_error,
        "percentiles_in_database": connection.vendor == "postgresql",
    }
