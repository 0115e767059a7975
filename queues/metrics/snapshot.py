"""The metrics snapshot (GET /api/metrics): jobs, queues, HTTP, audit, process and system in one JSON.

Job, HTTP and audit figures are read from the same recorded metrics /metrics exposes (so the two
always agree), queue depths from the same Redis reads as the scrape-time gauges, and throughput
from per-10-second finished-job counts in Redis (queues.metrics). Counters count since the metrics
directory was prepared (the start of `make run`), or since this process started without one.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import os
import sys
import threading
import time
from typing import Any

import psutil
from django.conf import settings
from redis.exceptions import RedisError

from queues.connections import get_connection, redis_ping
from queues.constants import QueueName
from queues.metrics import metrics_started_at, throughput_per_minute
from queues.metrics.collector import recorded_samples
from queues.selectors.queue_state import queue_depths

_PROCESS = psutil.Process()


def _sum(samples, name, **match) -> float:
    return sum(v for labels, v in samples.get(name, ()) if all(labels.get(k) == w for k, w in match.items()))


def _ratio(part: float, whole: float) -> float | None:
    return round(part / whole * 100, 2) if whole else None


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Like PromQL histogram_quantile: linear interpolation inside the bucket holding the rank."""
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # the rank lies above the highest finite bound
            if cumulative == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower


def _buckets(samples, name) -> list[tuple[float, float]]:
    merged: dict[float, float] = {}
    for labels, value in samples.get(name, ()):
        bound = float(labels["le"])
        merged[bound] = merged.get(bound, 0.0) + value
    return sorted(merged.items())


def _jobs(samples, depths, throughput) -> dict:
    queues = {}
    totals: dict[str, Any] = {"queued": 0, "scheduled": 0, "active": 0, "completed": 0, "failed": 0, "retried": 0}
    for queue in QueueName.values:
        finished = {
            o: _sum(samples, "slimy_jobs_finished_total", queue=queue, outcome=o)
            for o in ("completed", "failed", "retried", "cancelled")
        }
        runs = _sum(samples, "slimy_job_duration_seconds_count", queue=queue)
        run_time = _sum(samples, "slimy_job_duration_seconds_sum", queue=queue)
        waits = _sum(samples, "slimy_job_wait_seconds_count", queue=queue)
        wait_time = _sum(samples, "slimy_job_wait_seconds_sum", queue=queue)
        depth = depths["queues"][queue] if depths else {}
        figures = {
            "queued": depth.get("queued"),
            "scheduled": depth.get("scheduled"),
            "active": depth.get("started"),
            "failedInRedis": depth.get("failed"),
            "workers": depth.get("workers"),
            "oldestJobAgeSeconds": round(depth["oldestAgeSeconds"], 3) if depth else None,
            "enqueued": int(_sum(samples, "slimy_jobs_enqueued_total", queue=queue)),
            "completed": int(finished["completed"]),
            "failed": int(finished["failed"]),
            "retried": int(finished["retried"]),
            "cancelled": int(finished["cancelled"]),
            "successRate": _ratio(finished["completed"], finished["completed"] + finished["failed"]),
            "averageDuration": round(run_time / runs * 1000, 3) if runs else None,
            "averageWait": round(wait_time / waits * 1000, 3) if waits else None,
            "throughput": round(throughput.get(queue, 0.0), 3) if throughput is not None else None,
        }
        queues[queue] = figures
        for key, source in (
            ("queued", "queued"),
            ("scheduled", "scheduled"),
            ("active", "active"),
            ("completed", "completed"),
            ("failed", "failed"),
            ("retried", "retried"),
        ):
            totals[key] += figures[source] or 0
    totals["successRate"] = _ratio(totals["completed"], totals["completed"] + totals["failed"])
    return {"queues": queues, "totals": totals}


def _http(samples, elapsed: float | None) -> dict:
    by_status: dict[str, int] = {}
    for labels, value in samples.get("django_http_responses_total_by_status_total", ()):
        klass = f"{str(labels.get('status', '?'))[:1]}xx"
        by_status[klass] = by_status.get(klass, 0) + int(value)
    responses = sum(by_status.values())
    requests = _sum(samples, "django_http_requests_before_middlewares_total")
    buckets = _buckets(samples, "django_http_requests_latency_including_middlewares_seconds_bucket")
    latency = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = _quantile(q, buckets)
        latency[name] = round(value * 1000, 3) if value is not None else None
    count = _sum(samples, "django_http_requests_latency_including_middlewares_seconds_count")
    total = _sum(samples, "django_http_requests_latency_including_middlewares_seconds_sum")
    return {
        "requests": int(requests),
        "responses": responses,
        "requestRate": round(requests / elapsed, 4) if elapsed else None,
        "responseTime": {**latency, "average": round(total / count * 1000, 3) if count else None},
        "errorRate": _ratio(by_status.get("5xx", 0), responses),
        "clientErrorRate": _ratio(by_status.get("4xx", 0), responses),
        "byStatusClass": dict(sorted(by_status.items())),
        "exceptions": int(_sum(samples, "django_http_exceptions_total_by_type_total")),
    }


def _audit(samples) -> dict:
    logged = _sum(samples, "slimy_audit_events_written_total")
    failed = _sum(samples, "slimy_audit_events_failed_total")
    chain = samples.get("slimy_audit_chain_ok")
    return {
        "logged": int(logged),
        "failed": int(failed),
        "successRate": _ratio(logged, logged + failed),
        "failedByStage": {labels["stage"]: int(v) for labels, v in samples.get("slimy_audit_events_failed_total", ())},
        "chainOk": None if not chain else bool(chain[0][1]),
    }


def _process() -> dict:
    with _PROCESS.oneshot():
        memory = _PROCESS.memory_info()
        cpu = _PROCESS.cpu_times()
        created = _PROCESS.create_time()
        threads = _PROCESS.num_threads()
        fds = _PROCESS.num_fds() if hasattr(_PROCESS, "num_fds") else None
    uptime = max(time.time() - created, 1e-6)
    return {
        "pid": os.getpid(),
        "uptimeSeconds": round(uptime, 3),
        "memory": {"rss": memory.rss, "vms": memory.vms, "shared": getattr(memory, "shared", None)},
        # Python has no JS-style heap; these are the interpreter's allocator and collector figures.
        "heap": {
            "allocatedBlocks": sys.getallocatedblocks(),
            "gcCounts": list(gc.get_count()),
            "gcCollections": [s["collections"] for s in gc.get_stats()],
        },
        "cpu": {
            "userSeconds": round(cpu.user, 3),
            "systemSeconds": round(cpu.system, 3),
            "percentSinceStart": round((cpu.user + cpu.system) / uptime * 100, 2),
        },
        "threads": threads or threading.active_count(),
        "openFiles": fds,
    }


def _system() -> dict:
    memory = psutil.virtual_memory()
    load = os.getloadavg()
    return {
        "cpuCount": psutil.cpu_count(),
        "loadAverage": [round(x, 2) for x in load],
        "memory": {"total": memory.total, "available": memory.available, "percent": memory.percent},
        "uptimeSeconds": round(time.time() - psutil.boot_time(), 1),
    }


def metrics_snapshot() -> dict:
    now = time.time()
    samples = recorded_samples()
    depths = throughput = None
    if redis_ping(timeout=1.0):
        try:
            conn = get_connection()
            depths = queue_depths(conn)
            throughput = throughput_per_minute(conn, now=now)
        except (RedisError, OSError):
            depths = throughput = None
    path = settings.PROMETHEUS_MULTIPROC_DIR
    since = metrics_started_at(path) if path else _PROCESS.create_time()
    elapsed = (now - since) if since else None
    return {
        "ok": True,
        "generatedAt": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(),
        "countingSince": dt.datetime.fromtimestamp(since, dt.UTC).isoformat() if since else None,
        "multiprocess": bool(path),
        "redis": depths is not None,
        "jobs": _jobs(samples, depths, throughput),
        "workers": {"byState": depths["workers"], "list": depths["workerList"]} if depths else None,
        "http": _http(samples, elapsed),
        "audit": _audit(samples),
        "process": _process(),
        "system": _system(),
    }
