"""throughput: jobs/s per worker process through the real runner (ledger writes included).

Baseline: plain RQ `SimpleWorker` processes (no Django, no ledger) running a no-op function, same
process count, same Redis, same run. Rates come from the systems' own timestamps (first start to
last finish), so process start-up is not counted. Each figure is the median of `repeat` rounds.
"""

from __future__ import annotations

import datetime as dt

from rq import Queue

from bench import harness
from bench.harness import BenchEnv, Result
from bench.ledger import ledger_clear, ledger_jobs_prepare, ledger_window
from bench.stats import median
from queues.constants import QueueName

NAME = "throughput"
DEFAULTS = dict(jobs=3000, processes=1, repeat=3)
SMOKE = dict(jobs=40, processes=1, repeat=1)
BASELINE = "plain RQ SimpleWorker"
BASELINE_QUEUE = "bench-rq"

# (label, worker class, queues measured). The stock class is the "before" figure.
WORKERS = [
    ("SlimySimpleWorker (stock)", "queues.worker.SlimySimpleWorker", [QueueName.DATABASE]),
    ("SlimyBatchWorker", "queues.batchworker.SlimyBatchWorker", [QueueName.DATABASE, QueueName.CHAT, QueueName.AUDIT]),
]


def run(env: BenchEnv, *, jobs: int, processes: int, repeat: int, **_) -> Result:
    from bench.jobs import NOOP_JOB_TYPES

    result = Result(NAME, env, params=dict(jobs=jobs, processes=processes, repeat=repeat, job="no-op"))
    rounds: dict[str, list[float]] = {BASELINE: []}
    for _ in range(repeat):
        rounds[BASELINE].append(plain_rq_rate(env, jobs=jobs, processes=processes))
        for label, worker_class, queues in WORKERS:
            for queue in queues:
                key = f"{label} {queue}"
                rate = slimy_rate(env, worker_class=worker_class, job_type=NOOP_JOB_TYPES[queue],
                                  jobs=jobs, processes=processes)
                rounds.setdefault(key, []).append(rate)
    baseline = median(rounds[BASELINE])
    for key, rates in rounds.items():
        if key != BASELINE:
            result.add(key, median(rates), "jobs/s/process", BASELINE, baseline)
    result.details["rounds"] = rounds
    return result


def _parse(value: bytes) -> dt.datetime:
    return dt.datetime.strptime(value.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")


def plain_rq_rate(env: BenchEnv, *, jobs: int, processes: int) -> float:
    conn = env.redis()
    conn.flushdb()
    queue = Queue(BASELINE_QUEUE, connection=conn)
    ids = []
    for start in range(0, jobs, 500):
        with conn.pipeline() as pipe:
            batch = queue.enqueue_many([Queue.prepare_data("bench.baseline.noop") for _ in range(min(500, jobs - start))],
                                       pipeline=pipe)
            pipe.execute()
        ids += [job.id for job in batch]
    procs = [harness.rq_worker(env, [BASELINE_QUEUE], name=f"rq-{i}", burst=True) for i in range(processes)]
    for proc in procs:
        proc.wait(600)
        proc.stop()
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at", "status")
        rows = pipe.execute()
    done = [r for r in rows if r[2] == b"finished"]
    if len(done) != jobs:
        raise RuntimeError(f"plain RQ finished {len(done)} of {jobs} jobs")
    window = (max(_parse(r[1]) for r in done) - min(_parse(r[0]) for r in done)).total_seconds()
    return jobs / window / processes


def slimy_rate(env: BenchEnv, *, worker_class: str, job_type: str, jobs: int, processes: int) -> float:
    from queues.definitions import registry

    queue = registry.get(job_type).queue
    env.redis().flushdb()
    ledger_clear()
    ids = ledger_jobs_prepare(job_type=job_type, count=jobs)
    procs = [harness.slimy_worker(env, [queue], worker_class, name=f"slimy-{queue}-{i}", burst=True)
             for i in range(processes)]
    for proc in procs:
        proc.wait(600)
        proc.stop()
    done, window = ledger_window(job_ids=ids)
    if done != jobs:
        raise RuntimeError(f"{worker_class} completed {done} of {jobs} jobs; see {procs[0].log_path}")
    return jobs / window / processes
