"""pickup: on an idle system, time from submit to the handler's first line, p50/p99, warm and after idle.

Submit = `job_enqueue` in autocommit (record written, pushed to Redis on commit); the handler writes
`time.time()` to Redis as its first action. Samples are spaced by a short gap ("warm"), and
`idle_samples` more each follow `idle` seconds of idleness ("after idle": the worker has been waiting
for work all that time). Slimy's worker is the DEFAULT command, `manage.py rqworker database` with no
`--worker-class`: whatever runtime that command runs. Baseline: plain RQ SimpleWorker,
`queue.enqueue` of a function doing the same, measured the same way in the same run.
"""

from __future__ import annotations

import time

from rq import Queue

from bench import harness
from bench.harness import BenchEnv, Result
from bench.stats import percentile

NAME = "pickup"
DEFAULTS = dict(jobs=300, processes=1, repeat=1, idle=5.0, idle_samples=10)
SMOKE = dict(jobs=8, processes=1, repeat=1, idle=0.3, idle_samples=1)
GAP = 0.02
WARMUP = 3
BASELINE = "plain RQ SimpleWorker"
DEFAULT_WORKER = "rqworker database (default command)"


def run(env: BenchEnv, *, jobs: int, idle: float, idle_samples: int, **_) -> Result:
    result = Result(NAME, env, params=dict(samples=jobs, gap_s=GAP, idle_s=idle, idle_samples=idle_samples))
    base_warm, base_idle = _measure(env, False, jobs, idle, idle_samples)
    result.details[BASELINE] = _summary(base_warm, base_idle)
    label = DEFAULT_WORKER
    warm, after_idle = _measure(env, True, jobs, idle, idle_samples)
    result.details[label] = _summary(warm, after_idle)
    result.add(f"{label} p50", percentile(warm, 50), "ms", BASELINE, percentile(base_warm, 50), higher_is_better=False)
    result.add(f"{label} p99", percentile(warm, 99), "ms", BASELINE, percentile(base_warm, 99), higher_is_better=False)
    result.add(
        f"{label} p50 after {idle:g} s idle",
        percentile(after_idle, 50),
        "ms",
        BASELINE,
        percentile(base_idle, 50),
        higher_is_better=False,
    )
    result.add(
        f"{label} p99 after {idle:g} s idle",
        percentile(after_idle, 99),
        "ms",
        BASELINE,
        percentile(base_idle, 99),
        higher_is_better=False,
        note=f"{len(after_idle)} samples: p99 is about the maximum",
    )
    return result


def _summary(warm, after_idle) -> dict:
    return {
        "p50_ms": round(percentile(warm, 50), 3),
        "p99_ms": round(percentile(warm, 99), 3),
        "max_ms": round(max(warm), 3),
        "after_idle_ms": [round(v, 3) for v in after_idle],
    }


def _measure(env: BenchEnv, slimy: bool, samples: int, idle: float, idle_samples: int):
    from bench.ledger import ledger_clear
    from queues.services import job_enqueue

    conn = env.redis()
    conn.flushdb()
    ledger_clear()
    key = "bench:pickup"
    if not slimy:
        queue = Queue("bench-pickup-rq", connection=conn)
        proc = harness.rq_worker(env, [queue.name], name="pickup-rq", burst=False)
        harness.wait_until(lambda: conn.scard("rq:workers"), 60, "plain RQ worker start")

        def submit(seq):
            queue.enqueue("bench.baseline.stamp", key, seq)
    else:
        proc = harness.default_worker(env, ["database"], name="pickup-slimy")

        def submit(seq):
            job_enqueue(job_type="bench_stamp", payload={"key": key, "seq": seq})

    def sample(seq) -> float:
        started = time.time()
        submit(seq)
        popped = conn.blpop([key], timeout=30)
        if popped is None:
            raise RuntimeError(f"no pickup within 30 s; see {proc.log_path}")
        got_seq, stamp = popped[1].decode().split(":")
        assert int(got_seq) == seq
        return (float(stamp) - started) * 1000

    try:
        if slimy:
            harness.worker_warm(env, proc, job_type="bench_noop_database")
        time.sleep(0.5)  # let the worker settle into its blocking pop
        warm = []
        for seq in range(samples + WARMUP):
            value = sample(seq)
            if seq >= WARMUP:
                warm.append(value)
            time.sleep(GAP)
        after_idle = []
        for i in range(idle_samples):
            time.sleep(idle)
            after_idle.append(sample(samples + WARMUP + i))
    finally:
        proc.stop()
    return warm, after_idle
