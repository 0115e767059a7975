"""throughput: no-op jobs/s per worker process, Slimy beside plain RQ, Dramatiq and Huey in one run.

Slimy's figure: no-op `database`-queue jobs through the runner, ledger included (records written in
bulk, then pushed with `job_push`), run by the DEFAULT worker command, `manage.py rqworker database`
with no `--worker-class`: it measures whatever runtime that command runs. SlimyBatchWorker (today's
fast class behind `--worker-class`) is measured too, for context.

Baselines, same Redis, same run, same process count, no-op jobs queued before the workers start:
plain RQ `SimpleWorker` (no Django, no ledger); Dramatiq, `threads` threads per process; Huey's
consumer with `threads` worker threads. Rates come from each system's own clocks, first job start to
last job end (RQ's job hashes, the ledger, an in-memory window for Dramatiq and Huey:
bench.competitors), so start-up is not counted. Each figure is the median of `repeat` rounds.
A Slimy round still running `timeout` s after its first job started (a slow runtime, e.g. the forking
worker at ~30 jobs/s) is stopped and its rate taken over the jobs that completed (details say how many).
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from rq import Queue

from bench import harness
from bench.harness import BenchEnv, BenchSetupError, Result
from bench.ledger import ledger_clear, ledger_jobs_prepare, ledger_window
from bench.stats import median

NAME = "throughput"
DEFAULTS = dict(jobs=3000, processes=1, repeat=3, threads=8, timeout=120.0)
SMOKE = dict(jobs=40, processes=1, repeat=1, threads=2, timeout=120.0)
BASELINE_QUEUE = "bench-rq"
STARTUP_TIMEOUT = 180.0  # s for a worker to start its first job (Django start-up on a loaded machine)
JOB_TYPE = "bench_noop_database"

DEFAULT_WORKER = "rqworker database (default command)"
BATCH_WORKER = "SlimyBatchWorker database"
BATCH_CLASS = "queues.batchworker.SlimyBatchWorker"
PLAIN_RQ = "plain RQ SimpleWorker"


def dramatiq_label(threads: int) -> str:
    return f"Dramatiq 1x{threads} threads"


def huey_label(threads: int) -> str:
    return f"Huey {threads} threads"


def run(env: BenchEnv, *, jobs: int, processes: int, repeat: int, threads: int, timeout: float, **_) -> Result:
    _require_baselines()
    dramatiq, huey = dramatiq_label(threads), huey_label(threads)
    result = Result(
        NAME,
        env,
        params=dict(
            jobs=jobs, processes=processes, repeat=repeat, threads=threads, job="no-op", slimy_queue="database"
        ),
    )
    measures = {
        PLAIN_RQ: lambda: plain_rq_rate(env, jobs=jobs, processes=processes, timeout=timeout),
        dramatiq: lambda: dramatiq_rate(env, jobs=jobs, processes=processes, threads=threads, timeout=timeout),
        huey: lambda: huey_rate(env, jobs=jobs, processes=processes, threads=threads, timeout=timeout),
        DEFAULT_WORKER: lambda: slimy_rate(env, worker_class=None, jobs=jobs, processes=processes, timeout=timeout),
        BATCH_WORKER: lambda: slimy_rate(
            env, worker_class=BATCH_CLASS, jobs=jobs, processes=processes, timeout=timeout
        ),
    }
    rounds: dict[str, list[float]] = {label: [] for label in measures}
    completed: dict[str, list[int]] = {DEFAULT_WORKER: [], BATCH_WORKER: []}
    for _ in range(repeat):
        for label, measure in measures.items():
            rate = measure()
            if isinstance(rate, tuple):  # Slimy: (rate, jobs completed within the bound)
                rate, done = rate
                completed[label].append(done)
            rounds[label].append(rate)
    rate = {label: median(values) for label, values in rounds.items()}
    unit = "jobs/s/process"
    notes = {
        label: ""
        if all(d == jobs for d in done)
        else f"stopped after {timeout:g} s: {', '.join(map(str, done))} of {jobs} jobs completed per round"
        for label, done in completed.items()
    }
    for baseline in (dramatiq, huey, PLAIN_RQ):
        result.add(DEFAULT_WORKER, rate[DEFAULT_WORKER], unit, baseline, rate[baseline], note=notes[DEFAULT_WORKER])
    result.add(BATCH_WORKER, rate[BATCH_WORKER], unit, dramatiq, rate[dramatiq], note=notes[BATCH_WORKER])
    result.add(dramatiq, rate[dramatiq], unit, PLAIN_RQ, rate[PLAIN_RQ])
    result.add(huey, rate[huey], unit, PLAIN_RQ, rate[PLAIN_RQ])
    result.details["rounds"] = rounds
    result.details["slimy_jobs_completed"] = completed
    return result


def _require_baselines() -> None:
    import importlib.util

    missing = [name for name in ("dramatiq", "huey") if importlib.util.find_spec(name) is None]
    if missing:
        raise BenchSetupError(
            f"throughput needs {' and '.join(missing)} (its baselines): "
            'pip install -e ".[bench]" (`make install` does).'
        )


def _parse(value: bytes) -> dt.datetime:
    return dt.datetime.strptime(value.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")


def plain_rq_rate(env: BenchEnv, *, jobs: int, processes: int, timeout: float) -> float:
    conn = env.redis()
    conn.flushdb()
    queue = Queue(BASELINE_QUEUE, connection=conn)
    ids = []
    for start in range(0, jobs, 500):
        with conn.pipeline() as pipe:
            batch = queue.enqueue_many(
                [Queue.prepare_data("bench.baseline.noop") for _ in range(min(500, jobs - start))], pipeline=pipe
            )
            pipe.execute()
        ids += [job.id for job in batch]
    procs = [harness.rq_worker(env, [BASELINE_QUEUE], name=f"rq-{i}", burst=True) for i in range(processes)]
    for proc in procs:
        proc.wait(STARTUP_TIMEOUT + timeout)
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


def _competitor_rate(env: BenchEnv, name: str, argv: list[str], *, jobs: int, processes: int, timeout: float) -> float:
    from bench.competitors import window_read

    conn = env.redis()
    procs = [harness.start(env, argv, f"{name}-{i}", BENCH_REDIS_URL=env.redis_url) for i in range(processes)]
    try:

        def finished():
            for proc in procs:
                if proc.popen.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.popen.returncode}; see {proc.log_path}")
            return window_read(conn)[0] >= jobs

        harness.wait_until(
            finished, STARTUP_TIMEOUT + timeout, f"{name} to run {jobs} jobs (see {procs[0].log_path})", interval=0.1
        )
    finally:
        for proc in procs:
            proc.stop()
    done, first, last = window_read(conn)
    if done != jobs:
        raise RuntimeError(f"{name} ran {done} of {jobs} jobs; see {procs[0].log_path}")
    return jobs / (last - first) / processes


def dramatiq_rate(env: BenchEnv, *, jobs: int, processes: int, threads: int, timeout: float) -> float:
    from bench.competitors import DRAMATIQ_QUEUE, dramatiq_setup

    env.redis().flushdb()
    _, actor = dramatiq_setup(env.redis_url)
    for _ in range(jobs):
        actor.send()
    # One Dramatiq process (its own supervisor forks `--processes` workers) for all the processes.
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "bench.dramatiq_app",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--queues",
        DRAMATIQ_QUEUE,
    ]
    return _competitor_rate(env, "dramatiq", argv, jobs=jobs, processes=1, timeout=timeout) / processes


def huey_rate(env: BenchEnv, *, jobs: int, processes: int, threads: int, timeout: float) -> float:
    from bench.competitors import huey_setup

    env.redis().flushdb()
    _, task = huey_setup(env.redis_url)
    for _ in range(jobs):
        task()
    argv = [
        sys.executable,
        "-m",
        "huey.bin.huey_consumer",
        "bench.huey_app.huey",
        "--workers",
        str(threads),
        "--worker-type",
        "thread",
        "--quiet",
    ]
    # Huey's rate comes back per consumer process; every consumer is one process.
    return _competitor_rate(env, "huey", argv, jobs=jobs, processes=processes, timeout=timeout)


def slimy_rate(
    env: BenchEnv, *, worker_class: str | None, jobs: int, processes: int, timeout: float
) -> tuple[float, int]:
    """(jobs/s/process over the completed jobs, jobs completed) for one round of at most `timeout` s."""
    from queues.constants import JobStatus
    from queues.definitions import registry
    from queues.models import JobRecord

    queue = registry.get(JOB_TYPE).queue
    env.redis().flushdb()
    ledger_clear()
    ids = ledger_jobs_prepare(job_type=JOB_TYPE, count=jobs)
    tag = "default" if worker_class is None else worker_class.rsplit(".", 1)[1]
    names = [f"slimy-{tag}-{queue}-{i}" for i in range(processes)]
    if worker_class is None:
        # As a user runs it: not --burst (the runtime may have no burst mode); stopped once the ledger
        # shows every job completed, or at the bound.
        procs = [harness.default_worker(env, [queue], name=name) for name in names]
    else:
        procs = [harness.slimy_worker(env, [queue], worker_class, name=name, burst=True) for name in names]
    # The bound counts from the first job's start: a slow start-up under load does not eat the round.
    deadline = time.monotonic() + STARTUP_TIMEOUT + timeout
    running = False
    try:
        while time.monotonic() < deadline:
            if not running and JobRecord.objects.exclude(status=JobStatus.QUEUED).exists():
                running, deadline = True, time.monotonic() + timeout
            if worker_class is not None and all(p.popen.poll() is not None for p in procs):
                break  # burst workers exit when the queue is empty
            for proc in procs:
                if worker_class is None and proc.popen.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.popen.returncode}; see {proc.log_path}")
            if JobRecord.objects.filter(status=JobStatus.COMPLETED).count() >= jobs:
                break
            time.sleep(0.2)
    finally:
        for proc in procs:
            proc.stop()
    done, window = ledger_window(job_ids=ids)
    if done < 2 or not window:
        raise RuntimeError(f"{tag} completed {done} of {jobs} jobs in {timeout:g} s; see {procs[0].log_path}")
    return done / window / processes, done
