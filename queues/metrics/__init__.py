"""The job system's Prometheus metrics (names: slimy_<subsystem>_<name>_<unit>) and how processes share them.

Job metrics are recorded by receivers of the runner's hooks (queues.signals). Chat's and audit's own
metrics live in their apps (chat.metrics, audit.metrics), built on the multi-process values installed
here. Queue depth and worker gauges are computed at scrape time (queues.metrics.collector); the
snapshot behind /api/metrics is queues.metrics.snapshot, the two views queues.metrics.views.

Across processes: with PROMETHEUS_MULTIPROC_DIR set (the `make run` supervisor sets it for the web
process and every worker, after `prepare_multiprocess_dir`), every process writes its values to
mmap'ed files there and /metrics sums them. RQ forks one work-horse per job; left alone each horse
would leave its own files behind (thousands per hour). Horses of one worker run one after another,
so they share one file set named after their parent (`*_horse<worker pid>.db`); values accumulate.

A module that defines metrics imports this one first (`import queues.metrics`): the work-horse-aware
value class must be installed before any metric is constructed.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core import checks
from prometheus_client import Counter, Gauge, Histogram, multiprocess, values
from redis.exceptions import RedisError

from queues import signals
from queues.connections import get_connection
from queues.keys import THROUGHPUT_KEY

logger = logging.getLogger(__name__)

# --- Multi-process values (must be installed before the metrics below are constructed).
_horse: dict[str, int | None] = {"pid": None, "parent": None}


def _process_identifier():
    pid = os.getpid()
    if pid == _horse["pid"]:
        return f"horse{_horse['parent']}"
    return pid


def _install_multiprocess_values() -> None:
    # prometheus_client decides multi-process mode from the environment when it is imported; we only
    # swap its value class for one that knows work-horses. Nothing here touches the network.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not getattr(values.ValueClass, "slimy_horse_aware", False):
        value_class = values.MultiProcessValue(process_identifier=_process_identifier)
        value_class.slimy_horse_aware = True
        values.ValueClass = value_class


_install_multiprocess_values()


def enter_work_horse() -> None:
    """Called in a freshly forked work-horse: write to the worker's horse file set, not a new one."""
    _horse["pid"], _horse["parent"] = os.getpid(), os.getppid()


def prepare_multiprocess_dir(path) -> Path:
    """Empty (or create) the multi-process directory. Call once, before any process that writes to it starts."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / "started_at").write_text(f"{time.time():.3f}")
    return path


def process_exited(pid: int, path=None) -> None:
    """The supervisor calls this when a child process exits: drops its `live*` gauges (counters stay)."""
    path = path or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        multiprocess.mark_process_dead(pid, path)


def metrics_started_at(path) -> float | None:
    try:
        return float((Path(path) / "started_at").read_text())
    except (OSError, ValueError):
        return None


# --- Definitions.
JOB_LABELS = ("queue", "job_type")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OUTCOMES = ("completed", "failed", "retried", "cancelled")

JOBS_ENQUEUED = Counter("slimy_jobs_enqueued_total", "Jobs accepted into a queue.", JOB_LABELS)
JOBS_FINISHED = Counter(
    "slimy_jobs_finished_total",
    "Job attempts finished, by outcome (completed/failed/retried/cancelled).",
    JOB_LABELS + ("outcome",),
)
JOB_DURATION = Histogram("slimy_job_duration_seconds", "Run time of one attempt.", JOB_LABELS, buckets=DURATION_BUCKETS)
JOB_WAIT = Histogram(
    "slimy_job_wait_seconds", "Time from due to start of an attempt.", JOB_LABELS, buckets=DURATION_BUCKETS
)


OPEN_STREAMS = Gauge(
    "slimy_web_open_streams", "Event streams (SSE) open in web processes.", multiprocess_mode="livesum"
)


# Gauges computed at scrape time by queues.metrics.collector (listed here so every name lives in one place).
SCRAPE_GAUGES = {
    "slimy_queue_jobs": "Jobs in Redis by queue and state (queued, scheduled, started, failed).",
    "slimy_queue_oldest_job_age_seconds": "Age of the oldest job due to run but not started, by queue.",
    "slimy_queue_workers": "Workers listening on the queue.",
    "slimy_workers": "RQ workers by state.",
    "slimy_redis_up": "1 when Redis answered the scrape.",
    "slimy_tenant_inflight_jobs": 'Jobs of a tenant running on a fair-shared queue (top tenants, the rest as "other").',
    "slimy_tenant_waiting_jobs": 'Jobs of a tenant waiting their turn on a fair-shared queue (top tenants, rest "other").',
}

# Finished-job counts per 10 s bucket in Redis: the snapshot's "jobs per minute over 5 minutes",
# shared by every process without waiting for Prometheus.
THROUGHPUT_BUCKET_SECONDS = 10
THROUGHPUT_WINDOW_SECONDS = 300


# --- Hook receivers (connected in QueuesConfig.ready()).
_enqueued_children: dict[tuple[str, str], Any] = {}


def on_job_enqueued(sender, job, **kwargs) -> None:
    # Once per submission: the labelled child looked up once per (queue, type), not through labels() (its
    # checks and lock) each time; JOBS_ENQUEUED's children are never removed.
    key = (job.queue, job.job_type)
    child = _enqueued_children.get(key)
    if child is None:
        child = _enqueued_children[key] = JOBS_ENQUEUED.labels(*key)
    child.inc()


def on_job_started(sender, job, wait=None, **kwargs) -> None:
    if wait is not None:
        JOB_WAIT.labels(job.queue, job.job_type).observe(wait)


def on_job_finished(sender, job, outcome, duration=None, **kwargs) -> None:
    JOBS_FINISHED.labels(job.queue, job.job_type, outcome).inc()
    if duration is not None:
        JOB_DURATION.labels(job.queue, job.job_type).observe(duration)
    if outcome in ("completed", "failed"):
        _count_finished(job.queue)


# A long-lived worker process counts finished jobs in memory and writes them about once a second
# (its heartbeat calls `throughput_flush`): one round trip per second instead of one per job. Elsewhere
# (a forked work-horse exits right after its job, a web process) each count is written at once.
_throughput: dict[str, Any] = {"deferred": False, "counts": {}}
_throughput_lock = threading.Lock()


def throughput_defer(deferred: bool = True) -> None:
    """From now on this process's finished-job counts wait for `throughput_flush` (the worker runtime)."""
    _throughput["deferred"] = deferred


def _count_finished(queue: str) -> None:
    bucket = int(time.time()) // THROUGHPUT_BUCKET_SECONDS
    if _throughput["deferred"]:
        with _throughput_lock:
            counts = _throughput["counts"]
            counts[(bucket, queue)] = counts.get((bucket, queue), 0) + 1
        return
    _throughput_write({(bucket, queue): 1})


def throughput_flush() -> None:
    """Write the counts held in memory (one pipeline); kept for the next flush if Redis does not answer."""
    with _throughput_lock:
        counts, _throughput["counts"] = _throughput["counts"], {}
    if counts and not _throughput_write(counts):
        with _throughput_lock:
            for key, n in counts.items():
                _throughput["counts"][key] = _throughput["counts"].get(key, 0) + n


def _throughput_write(counts: dict[tuple[int, str], int]) -> bool:
    try:
        pipe = get_connection().pipeline(transaction=False)
        for (bucket, queue), n in counts.items():
            key = THROUGHPUT_KEY.format(bucket)
            pipe.hincrby(key, queue, n)
            pipe.expire(key, THROUGHPUT_WINDOW_SECONDS * 2)
        pipe.execute()
    except (RedisError, OSError):
        # Only the snapshot's throughput figure is affected; the job's outcome is already recorded.
        logger.warning("could not count the finished job for throughput", exc_info=True)
        return False
    return True


def throughput_per_minute(conn, now: float | None = None) -> dict[str, float]:
    """Jobs finished (completed or failed) per minute over the last 5 minutes, by queue."""
    now = time.time() if now is None else now
    last = int(now) // THROUGHPUT_BUCKET_SECONDS
    buckets = range(last - THROUGHPUT_WINDOW_SECONDS // THROUGHPUT_BUCKET_SECONDS + 1, last + 1)
    pipe = conn.pipeline(transaction=False)
    for bucket in buckets:
        pipe.hgetall(THROUGHPUT_KEY.format(bucket))
    totals: dict[str, int] = {}
    for counts in pipe.execute():
        for queue, n in counts.items():
            queue = queue.decode() if isinstance(queue, bytes) else queue
            totals[queue] = totals.get(queue, 0) + int(n)
    minutes = THROUGHPUT_WINDOW_SECONDS / 60
    return {queue: n / minutes for queue, n in totals.items()}


def on_worker_started(sender, **kwargs) -> None:
    throughput_defer()


def on_worker_heartbeat(sender, **kwargs) -> None:
    throughput_flush()


def on_worker_stopped(sender, **kwargs) -> None:
    throughput_defer(False)  # a process that ran an in-process worker (a test) counts at once again
    throughput_flush()


def connect_receivers() -> None:
    signals.job_enqueued.connect(on_job_enqueued, dispatch_uid="slimy-metrics-enqueued")
    signals.job_started.connect(on_job_started, dispatch_uid="slimy-metrics-started")
    signals.job_finished.connect(on_job_finished, dispatch_uid="slimy-metrics-finished")
    signals.worker_started.connect(on_worker_started, dispatch_uid="slimy-metrics-worker-started")
    signals.worker_heartbeat.connect(on_worker_heartbeat, dispatch_uid="slimy-metrics-worker-heartbeat")
    signals.worker_stopped.connect(on_worker_stopped, dispatch_uid="slimy-metrics-worker-stopped")


@checks.register(checks.Tags.compatibility)
def check_multiprocess_dir(app_configs=None, **kwargs):
    path = settings.PROMETHEUS_MULTIPROC_DIR
    if path and not (os.path.isdir(path) and os.access(path, os.W_OK)):
        return [
            checks.Error(
                f"PROMETHEUS_MULTIPROC_DIR {path!r} is not a writable directory.",
                hint="Create it empty before starting the processes (queues.metrics.prepare_multiprocess_dir).",
                id="queues.E101",
            )
        ]
    return []
