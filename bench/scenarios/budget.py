"""budget: the provider stand-in enforces N requests per sliding period (429 beyond); `clients` threads
call it as fast as they can for `seconds`, once through chat.budget (OPENAI_RPM set to the same limit) and
once without it (the baseline, same run). Figures: answered requests/s (the limit is the ceiling) and
429s sent. The requests are plain HTTP calls through httpx2 (what the openai client uses), not chat jobs.
"""

from __future__ import annotations

import threading
import time

from bench.harness import BenchEnv, Result

NAME = "budget"
DEFAULTS = dict(jobs=10, seconds=20.0, clients=12, period=1.0)  # jobs = the provider's requests per period
SMOKE = dict(jobs=10, seconds=2.0, clients=3, period=1.0)
BASELINE = "no budget"


def run(env: BenchEnv, *, jobs: int, seconds: float = 20.0, clients: int = 12, period: float = 1.0, **_) -> Result:
    import logging

    from tests.fake_llm import Behaviour, FakeLLM

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request otherwise

    limit_per_minute = jobs * 60 / period
    result = Result(
        NAME,
        env,
        params=dict(
            provider_limit=f"{jobs} requests / {period:g} s", rpm=limit_per_minute, seconds=seconds, clients=clients
        ),
    )
    fake = FakeLLM().start()
    fake.always(Behaviour(text="ok"))
    try:
        plain = _measure(env, fake, jobs, period, seconds, clients, rpm=None)
        budgeted = _measure(env, fake, jobs, period, seconds, clients, rpm=int(limit_per_minute))
    finally:
        fake.stop()
    ceiling = jobs / period
    result.add(
        "answered requests/s",
        budgeted["ok"] / seconds,
        "req/s",
        BASELINE,
        plain["ok"] / seconds,
        note=f"the provider's ceiling is {ceiling:g} req/s",
    )
    result.add(
        "answered requests/s as share of the limit",
        budgeted["ok"] / seconds / ceiling,
        "share",
        BASELINE,
        plain["ok"] / seconds / ceiling,
    )
    # +1 so a perfect run (zero 429s) still gives a ratio; the details keep the raw counts.
    result.add(
        "429s sent by the provider (+1)",
        budgeted["429"] + 1,
        "responses",
        BASELINE,
        plain["429"] + 1,
        higher_is_better=False,
    )
    result.details = {"budget": budgeted, BASELINE: plain}
    return result


def _measure(env: BenchEnv, fake, jobs, period, seconds, clients, *, rpm):
    import httpx2

    from chat.budget import budget_observe_sync, budget_wait_sync

    conn = env.redis()
    conn.flushdb()
    time.sleep(period)  # the provider's window forgets the previous round
    fake.rate_limit(requests=jobs, period=period)
    counts = {"ok": 0, "429": 0}
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client():
        own = env.redis()
        # An HTTP client takes a while to build (TLS context): built before the clock starts.
        with httpx2.Client() as http:
            ready.wait()
            while time.monotonic() < deadline[0]:
                if rpm:
                    budget_wait_sync(tokens=1, rpm=rpm, tpm=0, conn=own)
                    if time.monotonic() >= deadline[0]:
                        return
                response = http.post(
                    f"{fake.base_url}/chat/completions",
                    headers={"Authorization": f"Bearer {fake.api_key}"},
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                )
                if rpm:
                    budget_observe_sync(headers=response.headers, rpm=rpm, tpm=0, conn=own)
                with lock:
                    counts["ok" if response.status_code == 200 else "429"] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + 3600  # set for real once every client is ready
    ready.wait(timeout=120)
    deadline[0] = time.monotonic() + seconds
    for thread in threads:
        thread.join(seconds + 60)
    return counts
