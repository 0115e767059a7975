"""What Redis holds about the queues: the one reader of queue state, for the admin's dashboard, the
/metrics collector and the metrics snapshot.

The ledger (PostgreSQL) is the truth about jobs; this is the transport's view: list lengths, RQ's
registries, the workers RQ knows, pause flags, and the slots the worker runtime reports. Reads only,
pipelined, without side effects: registry sizes with ZCARD (RQ's `.count` would run a cleanup).
Leaves out the ledger (queues.selectors.jobs, queues.admin.dashboard) and the fair-share tenant
state (queues.fairness).
"""

from __future__ import annotations

import datetime as dt
import json
import time

from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.utils import str_to_date

from queues.connections import get_connection
from queues.constants import PRIORITY_ORDER, QueueName, base_queue_name, rq_queue_name
from queues.fairness import fair_waiting_heads
from queues.keys import SLOTS_KEY, alive_key, paused_key

QUEUE_STATES = ("queued", "scheduled", "started", "failed")
WORKER_STATES = ("idle", "busy", "started", "suspended")
_REGISTRY_TEMPLATES = {
    "scheduled": ScheduledJobRegistry.key_template,
    "started": StartedJobRegistry.key_template,
    "failed": FailedJobRegistry.key_template,
}


def _queue_key(name: str) -> str:
    return f"{Queue.redis_queue_namespace_prefix}{name}"


def queue_depths(conn, *, with_workers: bool = True) -> dict:
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
            pipe.zrangebyscore(
                _REGISTRY_TEMPLATES["scheduled"].format(name), "-inf", now, start=0, num=1, withscores=True
            )
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
            pipe.hget(Job.key_for(job_id), "enqueued_at")
        for (queue, _), enqueued_at in zip(heads, pipe.execute()):
            if not enqueued_at:
                continue
            try:
                age = now - str_to_date(enqueued_at).timestamp()
            except ValueError:
                continue
            result[queue]["oldestAgeSeconds"] = max(result[queue]["oldestAgeSeconds"], max(age, 0.0))

    by_state = {s: 0 for s in WORKER_STATES}
    worker_list: list[dict] = []
    for worker in Worker.all(connection=conn) if with_workers else ():
        state = str(getattr(worker.get_state(), "value", worker.get_state()))
        by_state[state] = by_state.get(state, 0) + 1
        served = sorted({base_queue_name(n) for n in worker.queue_names()})
        for queue in served:
            if queue in result:
                result[queue]["workers"] += 1
        worker_list.append(
            {
                "name": worker.name,
                "state": state,
                "queues": served,
                "pid": worker.pid,
                "hostname": worker.hostname,
                "currentJob": worker.get_current_job_id(),
                "successfulJobs": worker.successful_job_count,
                "failedJobs": worker.failed_job_count,
                "lastHeartbeat": _iso(worker.last_heartbeat),
            }
        )
    return {"queues": result, "workers": by_state, "workerList": worker_list}


def _iso(value) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def queue_redis_state() -> tuple[dict[str, dict], dict[str, dict | None], str]:
    """The dashboard's view of Redis per queue (backlog and RQ registries, from queue_depths) and the
    pause flags; error text when Redis is down."""
    paused: dict[str, dict | None] = {q: None for q in QueueName.values}
    try:
        conn = get_connection()
        depths = queue_depths(conn, with_workers=False)["queues"]
        paused = queue_paused(conn)
    except (RedisError, OSError) as exc:
        return {}, paused, f"Redis is unreachable: {exc}"
    state = {
        name: {
            "waiting": figures["queued"],
            "scheduled": figures["scheduled"],
            "started": figures["started"],
            "failed": figures["failed"],
        }
        for name, figures in depths.items()
    }
    return state, paused, ""


def queue_paused(conn) -> dict[str, dict | None]:
    """Per queue: its pause flag ({at, by, reason}) or None when it runs."""
    names = list(QueueName.values)
    paused: dict[str, dict | None] = {}
    for name, raw in zip(names, conn.mget([paused_key(n) for n in names])):
        if raw is None:
            paused[name] = None
            continue
        try:
            paused[name] = json.loads(raw)
        except ValueError:
            paused[name] = {"at": "", "by": "", "reason": ""}
    return paused


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
                heartbeat = timezone.make_aware(heartbeat, dt.UTC)
            rows.append(
                {
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
                }
            )
    except (RedisError, OSError) as exc:
        return [], f"Redis is unreachable: {exc}"
    return rows, ""


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def worker_slots() -> tuple[list[dict], str]:
    """Worker processes as their runtime reports them (SLOTS_KEY hashes): host, pid, and per
    queue the slots in use and the slots it has. Empty when no runtime writes them.

    Found with SCAN (the hashes have no index of their own), so the cost grows with Redis' keyspace;
    malformed fields are skipped, never fatal.
    """
    try:
        conn = get_connection()
        keys = sorted(conn.scan_iter(match=SLOTS_KEY.format("*"), count=1000))
        pipe = conn.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        hashes = pipe.execute()
    except (RedisError, OSError) as exc:
        return [], f"Redis is unreachable: {exc}"
    prefix = SLOTS_KEY.format("")
    rows = []
    for key, raw in zip(keys, hashes):
        if not raw:
            continue  # expired between SCAN and HGETALL
        fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
        queues: dict[str, dict] = {}
        for name, value in fields.items():
            queue, _, kind = name.rpartition(":")
            number = _int(value)
            if kind in ("busy", "slots") and queue and number is not None and number >= 0:
                queues.setdefault(queue, {"queue": queue, "busy": 0, "slots": 0})[kind] = number
        ordered = [queues.pop(q) for q in QueueName.values if q in queues] + [queues[q] for q in sorted(queues)]
        for entry in ordered:
            entry["percent"] = round(100 * min(entry["busy"], entry["slots"]) / entry["slots"]) if entry["slots"] else 0
        rows.append(
            {
                "name": key.decode(errors="replace")[len(prefix) :],
                "host": fields.get("host", ""),
                "pid": _int(fields.get("pid")),
                "queues": ordered,
                "busy": sum(e["busy"] for e in ordered),
                "slots": sum(e["slots"] for e in ordered),
            }
        )
    rows.sort(key=lambda r: (r["host"], r["name"]))
    return rows, ""
