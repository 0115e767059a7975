"""chat-concurrency: chat jobs/s and worker memory, the local fake provider answering in 1 s.

At each level N, N `chat_bot_interaction` jobs are submitted at once (`job_enqueue`, one owner, no
conversation) to idle workers; the rate is N over the window from the first submission to the last
completion (ledger clocks), memory the peak PSS (proportional set size: shared pages counted once)
of all worker processes, horses included. Every reply must come from the provider (no fallback).
Figure: ONE SlimyThreadWorker process (`threads` jobs in flight). Baseline: the same jobs on forking
workers (`SlimyWorker`, RQ's fork-per-job `Worker` plus the ledger) at the default chat concurrency
of 5 processes.
"""

from __future__ import annotations

import http.server
import threading

from bench import harness
from bench.harness import BenchEnv, Result
from bench.ledger import ledger_clear

NAME = "chat-concurrency"
DEFAULTS = dict(levels=(5, 50, 200), threads=64, reply_seconds=1.0, baseline_processes=5)
SMOKE = dict(levels=(2, 6), threads=8, reply_seconds=0.2, baseline_processes=2)
BASELINE = "5 forking SlimyWorker processes"
THREADED = "queues.threadworker.SlimyThreadWorker"
FORKING = "queues.worker.SlimyWorker"


def run(env: BenchEnv, *, levels, threads: int, reply_seconds: float, baseline_processes: int, **_) -> Result:
    from tests.fake_llm import Behaviour, FakeLLM

    # 200 simultaneous connections: the default listen backlog (5) would make clients wait for SYN retries.
    http.server.ThreadingHTTPServer.request_queue_size = 1024
    fake = FakeLLM().start()
    fake._server.handle_error = lambda request, address: None  # workers hang up on keep-alive: not news
    fake.always(Behaviour(text="A short bench reply.", delay_before=reply_seconds))
    baseline_name = BASELINE.replace("5", str(baseline_processes), 1)
    result = Result(NAME, env, params=dict(levels=list(levels), threads=threads, reply_seconds=reply_seconds,
                                           baseline_processes=baseline_processes, worker=THREADED))
    llm_env = dict(OPENAI_API_KEY=fake.api_key, OPENAI_BASE_URL=fake.base_url, WORKER_THREADS=threads,
                   LOG_LEVEL="WARNING")
    try:
        for level in levels:
            ours = _round(env, THREADED, 1, level, llm_env)
            base = _round(env, FORKING, baseline_processes, level, llm_env)
            result.details[str(level)] = {"threaded": ours, "forking": base}
            result.add(f"jobs/s at {level} simultaneous", ours["rate"], "jobs/s", baseline_name, base["rate"])
            result.add(f"worker memory at {level} simultaneous", ours["peak_mb"], "MB", baseline_name,
                       base["peak_mb"], higher_is_better=False)
    finally:
        fake.stop()
    return result


def _owner():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get_or_create(username="bench-chat")[0]


def _round(env: BenchEnv, worker_class: str, processes: int, level: int, llm_env: dict) -> dict:
    from django.db.models import Max, Min

    from queues.constants import JobStatus
    from queues.models import JobRecord
    from queues.services import job_enqueue

    conn = env.redis()
    conn.flushdb()
    ledger_clear()
    owner = _owner()
    names = [f"chat-{worker_class.rsplit('.', 1)[1]}-{i}" for i in range(processes)]
    procs = [harness.slimy_worker(env, ["chat"], worker_class, name=name, burst=False, **llm_env) for name in names]
    sampler = _MemorySampler([p.pid for p in procs])
    try:
        for name in names:
            harness.wait_until(lambda n=name: conn.exists(f"slimy:worker:alive:{n}"), 60, f"worker {name}")
        sampler.start()
        jobs = [job_enqueue(job_type="chat_bot_interaction", payload={"prompt": f"hello {i}"}, owner=owner)
                for i in range(level)]
        ids = [job.pk for job in jobs]
        harness.wait_until(
            lambda: JobRecord.objects.filter(pk__in=ids, status__in=[JobStatus.COMPLETED, JobStatus.FAILED]).count()
            == level, 300, f"{level} chat jobs", interval=0.05)
    finally:
        sampler.stop()
        for proc in procs:
            proc.stop()
    records = JobRecord.objects.filter(pk__in=ids)
    bad = [r for r in records if r.status != JobStatus.COMPLETED or (r.result or {}).get("usedFallback")]
    if bad:
        raise RuntimeError(f"{len(bad)} chat jobs failed or fell back, e.g. {bad[0].error_message or bad[0].result};"
                           f" see {procs[0].log_path}")
    window = records.aggregate(first=Min("created_at"), last=Max("finished_at"))
    seconds = (window["last"] - window["first"]).total_seconds()
    return {"rate": level / seconds, "seconds": round(seconds, 3), "peak_mb": sampler.peak_mb,
            "processes": processes}


class _MemorySampler:
    """Peak PSS of some processes and their children, sampled every 0.1 s."""

    def __init__(self, pids):
        self.pids = pids
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._sample()
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self):
        while not self._stop.wait(0.1):
            self._sample()

    def _sample(self):
        import psutil

        total = 0
        for pid in self.pids:
            try:
                parent = psutil.Process(pid)
                for proc in [parent, *parent.children(recursive=True)]:
                    total += proc.memory_full_info().pss
            except psutil.Error:
                continue
        self.peak_mb = max(self.peak_mb, total / 2**20)
