"""The reconciler: makes Redis agree with the ledger again.

- A waiting record (queued / scheduled / retrying) that Redis no longer holds in a runnable place
  (lost in a restart, a FLUSHALL, or a crash inside RQ's non-atomic multi-queue BLPOP) is pushed again.
- A started record whose worker stopped beating (see queues.worker) is handed to its retry policy,
  once the missing beat is confirmed by a later pass (a flushed or restarted Redis drops live keys too).
- A fair-dequeue slot (queues.fairness) held by a dead worker, or by a job that is no longer running,
  is released, so a crash never keeps a tenant below its CHAT_TENANT_CONCURRENCY for good.
- Delayed jobs overdue by SCHEDULER_LAG are moved to their queue: RQ's scheduler lock outlives a dead
  scheduler by up to a minute (and is re-tried every 2), which would hold retries back that long.
Pushing twice is harmless: the runner starts a record only from a waiting status.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.utils import now, utcformat

from queues.connections import get_connection, get_rq_queue
from queues.constants import PRIORITY_ORDER, WAITING_STATUSES, JobStatus, QueueName
from queues.fairness import fair_held, fair_release, fair_release_worker, fair_waiting_ids
from queues.keys import RECOVER_KEY, alive_key, slots_key, suspect_key
from queues.models import JobRecord, is_job_id
from queues.services import job_push, job_recover_abandoned
from queues.services.fair import fair_push_ids, queue_is_fair

logger = logging.getLogger("queues.reconcile")

BATCH = 5000
SCHEDULER_LAG = 3  # seconds a due job may wait for RQ's own scheduler before we move it


@dataclass
class ReconcileReport:
    requeued: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    slots_released: list[str] = field(default_factory=list)  # fair-dequeue slots, by job id or worker

    def __str__(self):
        return (
            f"requeued {len(self.requeued)} lost job(s), recovered {len(self.recovered)} abandoned job(s), "
            f"released {len(self.released)} overdue scheduled job(s)"
        )


def queues_reconcile(
    *, grace_seconds: int | None = None, confirm_seconds: float | None = None, scheduler_lag: float = SCHEDULER_LAG
) -> ReconcileReport:
    """One pass. `scheduler_lag` 0: this pass is the scheduler (the runtime runs no RQ scheduler)."""
    report = ReconcileReport()
    _release_overdue(report, scheduler_lag)
    grace = dt.timedelta(seconds=settings.RECONCILE_GRACE_SECONDS if grace_seconds is None else grace_seconds)
    # The key of a live worker never lapses (it beats several times per TTL); once lapsed, a second look
    # RECONCILE_CONFIRM_SECONDS later tells a dead worker from a flushed Redis.
    confirm = settings.RECONCILE_CONFIRM_SECONDS if confirm_seconds is None else confirm_seconds
    _recover_reported(report)
    _recover_abandoned(report, confirm)
    _requeue_lost(report, timezone.now() - grace)
    fair_slots_reconcile(report=report, confirm_seconds=confirm, grace_seconds=grace.total_seconds())
    if report.requeued or report.recovered or report.released:
        logger.warning("reconcile: %s", report)
    if report.slots_released:
        logger.warning("reconcile: released fair-dequeue slots %s", report.slots_released)
    return report


def scheduled_release_due() -> list[str]:
    """Move every delayed job and retry that is due now to its queue; returns their ids."""
    report = ReconcileReport()
    _release_overdue(report, 0)
    return report.released


def _release_overdue(report: ReconcileReport, lag: float) -> None:
    # RQ scores scheduled jobs in whole seconds, rounded down: a score of the current second may still be
    # up to a second early, and a worker refuses to start a record before it is due (DUE_TOLERANCE).
    cutoff = int(time.time() - max(lag, 1))
    rq_queues = {
        (queue, priority): get_rq_queue(queue, priority) for queue in QueueName.values for priority in PRIORITY_ORDER
    }
    # Every registry in one round trip: this runs every second in a worker's in-process reconciler, beside
    # the jobs it picks up. (What `get_jobs_to_schedule` reads, 1,000 at most per registry and pass.)
    with next(iter(rq_queues.values())).connection.pipeline(transaction=False) as pipe:
        for rq_queue in rq_queues.values():
            pipe.zrangebyscore(rq_queue.scheduled_job_registry.key, 0, cutoff, start=0, num=1000)
        due = dict(zip(rq_queues, pipe.execute()))
    for queue in QueueName.values:
        fair = []  # (priority, id): a fair queue's due jobs wait in their tenants' lines
        for priority in PRIORITY_ORDER:
            ids = [_text(i) for i in due[queue, priority]]
            if not ids:
                continue
            rq_queue = rq_queues[queue, priority]
            registry = rq_queue.scheduled_job_registry
            for job in Job.fetch_many(ids, connection=rq_queue.connection):
                if job is None:
                    continue
                # Remove first: if RQ's scheduler moved it meanwhile, zrem returns 0 and we leave it.
                if rq_queue.connection.zrem(registry.key, job.id):
                    if queue_is_fair(queue):
                        # What enqueue_job would record, so queue age figures count from now.
                        rq_queue.connection.hset(job.key, mapping={"status": "queued", "enqueued_at": utcformat(now())})
                        fair.append((priority, job.id))
                    else:
                        rq_queue.enqueue_job(job)
                    report.released.append(job.id)
        if fair:
            fair_push_ids(conn=get_connection(), queue=queue, items=fair)


def _recover_reported(report: ReconcileReport) -> None:
    """Jobs whose worker saw them fail while the database was down (see LedgerWorkerMixin._recover)."""
    conn = get_connection()
    for entry in conn.smembers(RECOVER_KEY):
        job_id, _, worker_name = _text(entry).partition(" ")
        # Only the attempt that worker was running: a record it no longer holds is someone else's now.
        if JobRecord.objects.filter(pk=job_id, status=JobStatus.STARTED, worker_name=worker_name).exists():
            if job_recover_abandoned(
                job_id=job_id, reason=f"failed on worker {worker_name} while the database was unreachable"
            ):
                report.recovered.append(job_id)
        conn.srem(RECOVER_KEY, entry)


# The two look-ups every pass makes, in plain SQL: this runs every second inside a worker process, and
# building the same ORM queries each time (~1.5 ms of the pass's ~2.2 ms of CPU) held the GIL the jobs'
# pickups wait on (pickup p99 6-9 ms with it, ~5 without the pass).
_STARTED_SQL = f"""
SELECT id, worker_name FROM {JobRecord._meta.db_table}
 WHERE status = %s AND worker_name <> '' ORDER BY created_at DESC LIMIT %s
"""
_ANY_WAITING_SQL = f"""
SELECT EXISTS (SELECT 1 FROM {JobRecord._meta.db_table} WHERE status = ANY(%s) AND updated_at < %s)
"""


def _recover_abandoned(report: ReconcileReport, confirm: float) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_STARTED_SQL, [JobStatus.STARTED, BATCH])
        started = cursor.fetchall()
    if not started:
        return
    dead = _dead_workers(sorted({name for _, name in started}), confirm)
    for job_id, name in started:
        # At once: the attempt did not fail, its process died, and someone may be watching the reply.
        if name in dead and job_recover_abandoned(
            job_id=job_id, reason=f"worker {name} stopped beating", immediate=True
        ):
            report.recovered.append(str(job_id))


def reconcile_exited_process(*, host: str, pid: int) -> ReconcileReport:
    """A worker process its supervisor saw exit (`kill -9`, the OOM killer): its jobs go back to their
    queues and its fair-dequeue slots are freed at once. The exit is proof of death, so the liveness
    key's lapse and its confirmation (several seconds, see _dead_workers) need not be waited for.

    The process is found by the slot hash its heartbeat writes (host and pid), which outlives it by up
    to WORKER_TTL; a process that never beat has no jobs to recover.
    """
    report = ReconcileReport()
    conn = get_connection()
    names = []
    for key in conn.scan_iter(match=slots_key("*"), count=500):
        owner_host, owner_pid = conn.hmget(key, "host", "pid")
        if _text(owner_host) == host and owner_pid is not None and int(owner_pid) == pid:
            names.append(_text(key)[len(slots_key("")) :])
    for name in names:
        conn.delete(alive_key(name), slots_key(name))
        for job_id in JobRecord.objects.filter(status=JobStatus.STARTED, worker_name=name).values_list("id", flat=True):
            if job_recover_abandoned(job_id=job_id, reason=f"worker {name} exited", immediate=True):
                report.recovered.append(str(job_id))
        for queue in settings.FAIR_QUEUES:
            if fair_release_worker(conn=conn, queue=queue, worker=name):
                report.slots_released.append(f"worker:{name}")
    return report


def _dead_workers(names: list[str], confirm: float) -> set[str]:
    """Workers whose liveness key has been missing for at least `confirm` seconds.

    Fault suite finding (scenario 6): a missing key alone is no proof of death. FLUSHALL, a Redis restart
    that lost its last second, or a pause longer than the key's TTL drop the keys of live workers, and
    taking their running jobs away made those jobs run twice. So the first pass that misses a key only
    notes the time (in Redis, on Redis' clock, shared by every reconciler); a later pass that still misses
    it after `confirm` seconds declares the worker dead. A beat in between clears the suspicion.
    """
    conn = get_connection()
    with conn.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.exists(alive_key(name))
        alive = dict(zip(names, pipe.execute()))
    seconds, micros = conn.time()
    now = seconds + micros / 1e6
    suspect_ttl = int(max(settings.WORKER_TTL, 3) * 3 + confirm + 1)
    dead = set()
    for name in names:
        if alive[name]:
            conn.delete(suspect_key(name))
            continue
        conn.set(suspect_key(name), repr(now), nx=True, ex=suspect_ttl)
        since = conn.get(suspect_key(name))
        if since is not None and now - float(since) >= confirm:
            dead.add(name)
    return dead


def fair_slots_reconcile(
    *, report: ReconcileReport | None = None, confirm_seconds: float, grace_seconds: float
) -> ReconcileReport:
    """Release fair-dequeue slots nobody will release: those of workers confirmed dead, and those held
    longer than `grace_seconds` by a job whose record is not running (it ended without its release)."""
    report = report if report is not None else ReconcileReport()
    conn = get_connection()
    now = _redis_now(conn)
    for queue in settings.FAIR_QUEUES:
        held = fair_held(conn=conn, queue=queue)
        if not held:
            continue
        for worker in sorted(_dead_workers(sorted({slot.worker for slot in held}), confirm_seconds)):
            if fair_release_worker(conn=conn, queue=queue, worker=worker):
                report.slots_released.append(f"worker:{worker}")
        old = [slot.job_id for slot in held if now - slot.since >= grace_seconds]
        running = {
            str(pk)
            for pk in JobRecord.objects.filter(
                pk__in=[i for i in old if is_job_id(i)], status=JobStatus.STARTED
            ).values_list("pk", flat=True)
        }
        stale = [job_id for job_id in old if job_id not in running]
        if stale and fair_release(conn=conn, queue=queue, job_ids=stale):
            report.slots_released.extend(stale)
    return report


def _redis_now(conn) -> float:
    seconds, micros = conn.time()
    return seconds + micros / 1e6


def _requeue_lost(report: ReconcileReport, older_than: dt.datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(_ANY_WAITING_SQL, [sorted(str(s) for s in WAITING_STATUSES), older_than])
        if not cursor.fetchone()[0]:
            return  # the usual pass: nothing has waited that long, nothing to compare with Redis
    waiting = list(
        JobRecord.objects.filter(status__in=WAITING_STATUSES, updated_at__lt=older_than).order_by("created_at")[:BATCH]
    )
    if not waiting:
        return
    conn = get_connection()
    in_lists: set[str] = set()
    scheduled: set[str] = set()
    taken: set[str] = set()
    held: dict[str, str] = {}  # fair-queue job id -> the worker that popped it
    for queue in QueueName.values:
        for priority in PRIORITY_ORDER:
            rq_queue = get_rq_queue(queue, priority)
            in_lists.update(_text(i) for i in conn.lrange(rq_queue.key, 0, -1))
            scheduled.update(_text(i) for i in conn.zrange(rq_queue.scheduled_job_registry.key, 0, -1))
            taken.update(rq_queue.started_job_registry.get_job_ids())
        if queue_is_fair(queue):
            in_lists.update(fair_waiting_ids(conn=conn, queue=queue))
            held.update((slot.job_id, slot.worker) for slot in fair_held(conn=conn, queue=queue))
    for job in waiting:
        job_id = str(job.id)
        if job_id in in_lists or job_id in scheduled:
            continue
        if job_id in taken and _taken_by_live_worker(conn, job_id):
            continue  # popped by a worker that has not marked it started yet
        if job_id in held and conn.exists(alive_key(held[job_id])):
            continue  # popped from its tenant's line by a live worker that has not started it yet
        job_push(job=job)
        report.requeued.append(job_id)


def _taken_by_live_worker(conn, job_id: str) -> bool:
    """Whether the worker RQ says holds this job still beats.

    Fault suite finding (scenario 5): after a worker died with Redis, its stale started-registry entry
    hid a waiting job from this pass until RQ expired the entry, ~90 s later.
    """
    try:
        worker_name = Job.fetch(job_id, connection=conn).worker_name
    except NoSuchJobError:
        return False
    if not worker_name:
        return False
    return bool(conn.exists(alive_key(worker_name)))


def _text(value) -> str:
    """A member read from Redis (bytes: the connections do not decode) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
