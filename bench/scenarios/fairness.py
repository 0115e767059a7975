"""fairness: guild A submits a flood, guilds B–E a few jobs each, all at the same moment (A's a moment
earlier). How long do the small guilds wait for their replies?

Phase-1 skeleton with SIMULATED consumers: `consumers` threads in this process stand in for a worker's
chat slots; a "reply" is a sleep of `reply` seconds. What is real: the Redis structures and Lua scripts
of queues.fairness (fair_push / fair_pop / fair_release / fair_wait) on the bench's private Redis.
Baseline (same run, same consumers, same reply time): plain FIFO, one Redis list (LPUSH / BRPOP), as RQ
queues a job today. Figures: the small guilds' p95 completion time (from the submission moment), also in
reply-times, and guild A's last completion (the per-tenant cap's price: A may use CHAT_TENANT_CONCURRENCY
slots at a time, however idle the rest are).
"""

from __future__ import annotations

import threading
import time

from bench.harness import BenchEnv, Result
from bench.stats import percentile

NAME = "fairness"
DEFAULTS = dict(jobs=500, small=10, guilds=4, consumers=10, reply=0.1, cap=2)
SMOKE = dict(jobs=30, small=3, guilds=4, consumers=4, reply=0.01, cap=2)
BASELINE = "plain FIFO"
QUEUE = "chat"
FIFO_KEY = "bench:fairness:fifo"


def run(env: BenchEnv, *, jobs: int, small: int = 10, guilds: int = 4, consumers: int = 10, reply: float = 0.1,
        cap: int = 2, **_) -> Result:
    submissions = [("A", f"A-{i}") for i in range(jobs)]
    for g in range(guilds):
        tenant = chr(ord("B") + g)
        submissions += [(tenant, f"{tenant}-{i}") for i in range(small)]
    result = Result(NAME, env, params=dict(big_guild_jobs=jobs, small_guilds=guilds, small_guild_jobs=small,
                                           consumers=consumers, reply_s=reply, tenant_cap=cap,
                                           consumers_kind="simulated (threads sleeping `reply` s)"))
    fifo, fifo_submit = _measure(env, submissions, consumers, reply, cap, fair=False)
    fair, fair_submit = _measure(env, submissions, consumers, reply, cap, fair=True)
    small_fifo = [t for tenant, t in fifo if tenant != "A"]
    small_fair = [t for tenant, t in fair if tenant != "A"]
    big_fifo = [t for tenant, t in fifo if tenant == "A"]
    big_fair = [t for tenant, t in fair if tenant == "A"]
    result.add("small guilds p95 completion", percentile(small_fair, 95), "s", BASELINE,
               percentile(small_fifo, 95), higher_is_better=False)
    result.add("small guilds p95 completion in reply-times", percentile(small_fair, 95) / reply, "replies",
               BASELINE, percentile(small_fifo, 95) / reply, higher_is_better=False)
    result.add("guild A last completion", max(big_fair), "s", BASELINE, max(big_fifo), higher_is_better=False,
               note="the per-tenant cap keeps A to `cap` slots even when others are idle")
    result.details = {
        "fair": {"small_p50_s": round(percentile(small_fair, 50), 3), "small_max_s": round(max(small_fair), 3),
                 "big_p50_s": round(percentile(big_fair, 50), 3), "submit_s": round(fair_submit, 3)},
        BASELINE: {"small_p50_s": round(percentile(small_fifo, 50), 3), "small_max_s": round(max(small_fifo), 3),
                   "big_p50_s": round(percentile(big_fifo, 50), 3), "submit_s": round(fifo_submit, 3)},
    }
    return result


def _measure(env: BenchEnv, submissions, consumers: int, reply: float, cap: int, *, fair: bool):
    from queues.fairness import fair_pop, fair_push_many, fair_release, fair_wait

    conn = env.redis()
    conn.flushdb()
    tenant_of = dict((job_id, tenant) for tenant, job_id in submissions)
    finished: list[tuple[str, float]] = []
    lock = threading.Lock()
    remaining = [len(submissions)]
    start = threading.Event()
    t0 = [0.0]
    submit_seconds = [0.0]

    def consume(name: str):
        own = env.redis()
        start.wait()
        while True:
            with lock:
                if remaining[0] == 0:
                    return
            if fair:
                job = fair_pop(conn=own, queue=QUEUE, worker=name, cap=cap)
                if job is None:
                    fair_wait(conn=own, queue=QUEUE, timeout=0.05)
                    continue
                job_id = job.job_id
            else:
                popped = own.brpop([FIFO_KEY], timeout=0.05)
                if popped is None:
                    continue
                job_id = popped[1].decode()
            time.sleep(reply)
            done = time.monotonic() - t0[0]
            if fair:
                fair_release(conn=own, queue=QUEUE, job_ids=[job_id], cap=cap)
            with lock:
                finished.append((tenant_of[job_id], done))
                remaining[0] -= 1

    threads = [threading.Thread(target=consume, args=(f"bench-{i}",), daemon=True) for i in range(consumers)]
    for thread in threads:
        thread.start()
    # Everything is submitted before a consumer starts ("at the same moment", A's flood first), in one
    # round trip either way; the clock starts when the consumers do.
    submitted = time.monotonic()
    if fair:
        fair_push_many(conn=conn, queue=QUEUE, items=[("normal", t, j) for t, j in submissions], cap=cap)
    else:
        with conn.pipeline(transaction=False) as pipe:
            for _, job_id in submissions:
                pipe.lpush(FIFO_KEY, job_id)
            pipe.execute()
    submit_seconds[0] = time.monotonic() - submitted
    t0[0] = time.monotonic()
    start.set()
    for thread in threads:
        thread.join(timeout=3600)
    return finished, submit_seconds[0]
