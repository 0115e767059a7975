"""audit-ingest: audit events/s from `audit_event_record` and from bulk jobs to committed rows.

Events are produced first (`audit_event_record`, which stages each event in the ingest buffer and asks
for an `audit_drain` job — what every request-path caller does; and `log_events_bulk` jobs of 1,000
events — what `POST /api/audit-log` with a list enqueues), then `processes` SlimyBatchWorker processes
work the audit queue; the rate is events over the window from the first audit job's start to the last
one's completion (the ledger's clock; a completion follows the commit of the job's rows). Every event
must be stored exactly once and the chain must verify (checked). Baselines, same run: the original
design, one plain RQ job per event doing one `AuditLog.objects.create()` (same process count); and the
database's own speed, one psycopg `COPY` of the same rows (precomputed, no hashing) in one transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid

from django.db import connection
from django.db.models import Count, Max, Min
from django.utils import timezone

from bench import harness
from bench.harness import BenchEnv, Result
from bench.ledger import ledger_clear
from bench.stats import median

NAME = "audit-ingest"
DEFAULTS = dict(jobs=20000, processes=1, repeat=1)
SMOKE = dict(jobs=60, processes=1, repeat=1)
BASELINE = "one .create() per plain RQ job"
COPY_BASELINE = "raw COPY of the same rows"
BASELINE_QUEUE = "bench-audit-rq"
BASELINE_MAX_EVENTS = 3000  # the baseline is slow; its rate is measured on at most this many events
WORKER = "queues.batchworker.SlimyBatchWorker"


def _event(i: int) -> dict:
    return {
        "eventId": str(uuid.uuid4()),
        "occurredAt": timezone.now().isoformat(),
        "action": "bench.event",
        "resourceType": "bench",
        "resourceId": str(i),
        "details": {"i": i},
    }


def _audit_clear() -> None:
    with connection.cursor() as cursor:
        # Staged events left by other scenarios (chat replies audit themselves) would count here too.
        cursor.execute("TRUNCATE audit_auditlog, audit_auditchaingap, audit_auditchainhead, audit_auditstagedevent")


def run(env: BenchEnv, *, jobs: int, processes: int, repeat: int, **_) -> Result:
    result = Result(
        NAME,
        env,
        params=dict(
            events=jobs,
            processes=processes,
            repeat=repeat,
            worker=WORKER,
            baseline_events=min(jobs, BASELINE_MAX_EVENTS),
            bulk_job_size=1000,
        ),
    )
    rounds = {"baseline": [], "copy": [], "record": [], "bulk": [], "record_produce": []}
    for _ in range(repeat):
        rounds["baseline"].append(_baseline_rate(env, min(jobs, BASELINE_MAX_EVENTS), processes))
        rounds["copy"].append(_copy_rate(jobs))
        produce, drain = _record_rate(env, jobs, processes)
        rounds["record_produce"].append(produce)
        rounds["record"].append(drain)
        rounds["bulk"].append(_bulk_rate(env, jobs, processes))
    baseline, copy = median(rounds["baseline"]), median(rounds["copy"])
    record, bulk = median(rounds["record"]), median(rounds["bulk"])
    result.add("audit_event_record -> rows", record, "events/s", BASELINE, baseline)
    result.add("bulk jobs (1,000 events) -> rows", bulk, "events/s", BASELINE, baseline)
    result.add("audit_event_record -> rows vs COPY", record, "events/s", COPY_BASELINE, copy)
    result.add("bulk jobs (1,000 events) -> rows vs COPY", bulk, "events/s", COPY_BASELINE, copy)
    result.details["rounds"] = rounds
    result.details["note"] = (
        "record_produce = audit_event_record calls/s in one process (the producer side, not part of the figure)"
    )
    return result


def _drain(env: BenchEnv, processes: int, expected: int) -> float:
    from audit.chain import chain_verify
    from audit.models import AuditLog
    from queues.models import JobRecord

    procs = [harness.slimy_worker(env, ["audit"], WORKER, name=f"audit-{i}", burst=True) for i in range(processes)]
    for proc in procs:
        proc.wait(900)
        proc.stop()
    rows = AuditLog.objects.aggregate(n=Count("id"), distinct=Count("event_id", distinct=True), last=Max("recorded_at"))
    if rows["n"] != expected or rows["distinct"] != expected:
        raise RuntimeError(f"expected {expected} events stored once, found {rows}; see {procs[0].log_path}")
    if not chain_verify().ok:
        raise RuntimeError("the audit chain does not verify")
    window = JobRecord.objects.filter(queue="audit").aggregate(first=Min("started_at"), last=Max("finished_at"))
    # To the last audit job's completion (after its rows were committed): the last row's `recorded_at` is
    # taken before that row's batch is even written, so it would leave the last append out.
    return expected / (window["last"] - window["first"]).total_seconds()


def _record_rate(env: BenchEnv, events: int, processes: int) -> tuple[float, float]:
    from audit.services import audit_event_record

    env.redis().flushdb()
    ledger_clear()
    _audit_clear()
    started = timezone.now()
    for i in range(events):
        audit_event_record(action="bench.event", resource_type="bench", resource_id=str(i), details={"i": i})
    produce = events / (timezone.now() - started).total_seconds()
    return produce, _drain(env, processes, events)


def _bulk_rate(env: BenchEnv, events: int, processes: int) -> float:
    from queues.services import job_enqueue

    env.redis().flushdb()
    ledger_clear()
    _audit_clear()
    for start in range(0, events, 1000):
        job_enqueue(
            job_type="log_events_bulk", payload={"events": [_event(i) for i in range(start, min(start + 1000, events))]}
        )
    return _drain(env, processes, events)


def _baseline_rate(env: BenchEnv, events: int, processes: int) -> float:
    from rq import Queue

    from audit.models import AuditLog

    conn = env.redis()
    conn.flushdb()
    _audit_clear()
    queue = Queue(BASELINE_QUEUE, connection=conn)
    ids = []
    for start in range(0, events, 500):
        with conn.pipeline() as pipe:
            batch = queue.enqueue_many(
                [
                    Queue.prepare_data("bench.baseline.audit_create", args=(_event(i),))
                    for i in range(start, min(start + 500, events))
                ],
                pipeline=pipe,
            )
            pipe.execute()
        ids += [job.id for job in batch]
    procs = [
        harness.rq_worker(env, [BASELINE_QUEUE], name=f"audit-rq-{i}", burst=True, django=True)
        for i in range(processes)
    ]
    for proc in procs:
        proc.wait(900)
        proc.stop()
    if AuditLog.objects.count() != events:
        raise RuntimeError(f"baseline stored {AuditLog.objects.count()} of {events}; see {procs[0].log_path}")
    # RQ's own timestamps, as in the throughput scenario.
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at")
        stamps = [r for r in pipe.execute() if r[0] and r[1]]
    parse = lambda v: dt.datetime.strptime(v.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")  # noqa: E731
    if len(stamps) != events:
        raise RuntimeError(f"baseline: {len(stamps)} timestamps for {events} jobs")
    return events / (max(parse(r[1]) for r in stamps) - min(parse(r[0]) for r in stamps)).total_seconds()


def _copy_rate(events: int) -> float:
    """The database's speed for these rows: one COPY in one transaction, rows built beforehand."""
    import json
    import time

    from django.db import transaction
    from django.utils.dateparse import parse_datetime

    _audit_clear()
    now = timezone.now()
    rows = [
        (
            uuid.UUID(e["eventId"]),
            parse_datetime(e["occurredAt"]),
            now,
            None,
            None,
            "",
            e["action"],
            e["resourceType"],
            e["resourceId"],
            json.dumps(e["details"]),
            None,
            "",
            "",
            "",
            True,
            "",
            "0" * 64,
            "0" * 64,
        )
        for e in map(_event, range(events))
    ]
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        with cursor.cursor.copy(
            "COPY audit_auditlog (event_id, occurred_at, recorded_at, actor_user_id, actor_ref, "
            "actor_label, action, resource_type, resource_id, details, ip, user_agent, "
            "session_id, request_id, success, error_message, prev_hash, row_hash) "
            "FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
    rate = events / (time.perf_counter() - started)
    _audit_clear()
    return rate
