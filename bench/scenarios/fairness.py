"""fairness: guild A submits a flood of chat-queue jobs, guilds B–E a few each, all at the same moment
(A's first). How long do the small guilds wait for their replies?

Real workers: `processes` × `manage.py rqworker chat` (the default command, the worker runtime) with
CHAT_CONCURRENCY=`concurrency` and CHAT_TENANT_CONCURRENCY=`cap`. A job is `bench_guild_reply`: a chat-queue
coroutine of its guild (tenant_field `guildId`) that waits `reply` seconds, as an LLM reply does. The jobs
are written and pushed (`job_push`) while the chat queue is paused from the admin, then it is resumed, so
every job is waiting when the first one starts. Times come from the ledger: completion = a job's
finished_at − the round's first started_at.

Baseline (same run, same workers, same jobs): plain FIFO — FAIR_QUEUES empty in the workers and for the
pushes, so the chat queue is RQ's lists popped in order, as before fair dequeue. Figures: the small guilds'
p95 completion (also in reply-times) and guild A's last completion (the per-tenant cap's price: A runs at
most `cap` jobs at a time, however idle the other slots are). Details: A's most jobs at once (the cap seen
in the ledger).
"""

from __future__ import annotations

import time

from django.test import override_settings

from bench import harness
from bench.harness import BenchEnv, Result
from bench.ledger import ledger_clear, ledger_jobs_prepare
from bench.stats import percentile

NAME = "fairness"
DEFAULTS = dict(jobs=500, small=10, guilds=4, processes=2, concurrency=5, reply=0.1, cap=2, timeout=600.0)
SMOKE = dict(jobs=12, small=2, guilds=2, processes=1, concurrency=4, reply=0.02, cap=2, timeout=120.0)
BASELINE = "plain FIFO"
JOB_TYPE = "bench_guild_reply"


def run(
    env: BenchEnv,
    *,
    jobs: int,
    small: int = 10,
    guilds: int = 4,
    processes: int = 2,
    concurrency: int = 5,
    reply: float = 0.1,
    cap: int = 2,
    timeout: float = 600.0,
    **_,
) -> Result:
    payloads = [{"guildId": "A", "seconds": reply} for _ in range(jobs)]
    for g in range(guilds):
        payloads += [{"guildId": chr(ord("B") + g), "seconds": reply} for _ in range(small)]
    result = Result(
        NAME,
        env,
        params=dict(
            big_guild_jobs=jobs,
            small_guilds=guilds,
            small_guild_jobs=small,
            worker_processes=processes,
            chat_concurrency=concurrency,
            slots=processes * concurrency,
            reply_s=reply,
            tenant_cap=cap,
            workers="manage.py rqworker chat (the runtime), real processes",
        ),
    )
    fifo = _round(env, payloads, fair=False, processes=processes, concurrency=concurrency, cap=cap, timeout=timeout)
    fair = _round(env, payloads, fair=True, processes=processes, concurrency=concurrency, cap=cap, timeout=timeout)
    small_fifo, small_fair = fifo["small"], fair["small"]
    result.add(
        "small guilds p95 completion",
        percentile(small_fair, 95),
        "s",
        BASELINE,
        percentile(small_fifo, 95),
        higher_is_better=False,
    )
    result.add(
        "small guilds p95 completion in reply-times",
        percentile(small_fair, 95) / reply,
        "replies",
        BASELINE,
        percentile(small_fifo, 95) / reply,
        higher_is_better=False,
    )
    result.add(
        "guild A last completion",
        max(fair["big"]),
        "s",
        BASELINE,
        max(fifo["big"]),
        higher_is_better=False,
        note="the per-tenant cap keeps A to `cap` slots even when others are idle",
    )
    result.details = {"fair": _summary(fair), BASELINE: _summary(fifo)}
    return result


def _summary(data: dict) -> dict:
    return {
        "small_p50_s": round(percentile(data["small"], 50), 3),
        "small_max_s": round(max(data["small"]), 3),
        "big_p50_s": round(percentile(data["big"], 50), 3),
        "big_most_at_once": data["big_most_at_once"],
        "submit_s": round(data["submit_s"], 3),
        "finished": data["finished"],
        "logs": data["logs"],
    }


def _round(env: BenchEnv, payloads, *, fair: bool, processes: int, concurrency: int, cap: int, timeout: float) -> dict:
    from queues.constants import JobStatus, QueueName
    from queues.keys import alive_key
    from queues.models import JobRecord
    from queues.services import job_enqueue, queue_pause, queue_resume

    conn = env.redis()
    conn.flushdb()
    ledger_clear()
    fair_queues = [QueueName.CHAT] if fair else []
    tag = "fair" if fair else "fifo"
    names = [f"fairness-{tag}-{i}" for i in range(processes)]
    procs = [
        harness.default_worker(
            env,
            ["chat"],
            name=name,
            CHAT_CONCURRENCY=concurrency,
            CHAT_TENANT_CONCURRENCY=cap,
            FAIR_QUEUES=",".join(fair_queues),
        )
        for name in names
    ]
    try:
        with override_settings(FAIR_QUEUES=fair_queues, CHAT_TENANT_CONCURRENCY=cap):
            harness.wait_until(lambda: all(conn.exists(alive_key(n)) for n in names), 120, "the workers to start")
            warm = job_enqueue(job_type="bench_noop_chat", payload={})
            harness.wait_until(
                lambda: JobRecord.objects.filter(pk=warm.pk, status=JobStatus.COMPLETED).exists(),
                120,
                "the warm-up job",
            )
            queue_pause(queue=QueueName.CHAT, reason="bench fairness: submitting")
            time.sleep(1.5)  # workers see a pause within a second
            began = time.monotonic()
            ids = ledger_jobs_prepare(job_type=JOB_TYPE, count=len(payloads), payloads=payloads)
            submit_s = time.monotonic() - began
            queue_resume(queue=QueueName.CHAT)
        deadline = time.monotonic() + timeout
        finished = True
        while JobRecord.objects.filter(pk__in=ids, status=JobStatus.COMPLETED).count() < len(ids):
            if time.monotonic() > deadline:
                finished = False
                break
            time.sleep(0.2)
    finally:
        for proc in procs:
            proc.stop()
    rows = list(
        JobRecord.objects.filter(pk__in=ids, status=JobStatus.COMPLETED).values_list(
            "tenant", "started_at", "finished_at"
        )
    )
    t0 = min(started for _, started, _ in rows)
    big = [(s, f) for tenant, s, f in rows if tenant == "A"]
    return {
        "small": [(f - t0).total_seconds() for tenant, _, f in rows if tenant != "A"],
        "big": [(f - t0).total_seconds() for _, f in big],
        "big_most_at_once": max(sum(1 for s, f in big if s <= moment < f) for moment, _ in big),
        "submit_s": submit_s,
        "finished": finished,
        "logs": [str(p.log_path) for p in procs],
    }
