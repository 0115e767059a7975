"""stream: time from the provider's first token to the client's first SSE `chunk` event, p50/p99.

One web process (gunicorn gthread, as `make run`), one SlimyThreadWorker on `chat`, the local fake
provider (answering after `delay` s, then streaming its chunks at once). For each sample a chat job
is submitted, the client opens `GET /api/jobs/<id>/events` and reads until the first `chunk` event.
The provider's first token leaves at (request received + delay) — the fake records the arrival on the
same monotonic clock as the client, so the difference is the overhead of worker → Redis stream →
web process → client. Baseline: the same client reading the provider's own stream directly (the raw
HTTP round trip of one token), measured the same way in the same run.
"""

from __future__ import annotations

import http.client
import json
import time

from bench import harness
from bench.harness import BenchEnv, Result
from bench.ledger import ledger_clear
from bench.stats import percentile

NAME = "stream"
DEFAULTS = dict(jobs=40, delay=0.4)
SMOKE = dict(jobs=3, delay=0.3)
BASELINE = "provider stream read directly"
UNLIMITED = "submit=1000000000/min,read=1000000000/min,write=1000000000/min"


def run(env: BenchEnv, *, jobs: int, delay: float, **_) -> Result:
    from bench.scenarios.submit import _token
    from tests.chat.sse import LiveStream
    from tests.fake_llm import Behaviour, FakeLLM

    fake = FakeLLM().start()
    fake._server.handle_error = lambda request, address: None  # workers hang up on keep-alive: not news
    fake.always(Behaviour(chunks=["Hello", " from", " the", " bench"], delay_before=delay))
    env.redis().flushdb()
    ledger_clear()
    token = _token()
    from slimy_site.models import ApiToken
    from slimy_site.tokens import token_digest

    owner = ApiToken.objects.get(digest=token_digest(token)).user
    port = harness.free_port()
    llm = dict(OPENAI_API_KEY=fake.api_key, OPENAI_BASE_URL=fake.base_url, LOG_LEVEL="WARNING")
    web = harness.start(
        env,
        harness.gthread_argv(port),
        "stream-web",
        API_RATE_LIMITS=UNLIMITED,
        **llm,
    )
    worker = harness.slimy_worker(
        env, ["chat"], "queues.threadworker.SlimyThreadWorker", name="stream-chat", burst=False, **llm
    )
    result = Result(
        NAME,
        env,
        params=dict(samples=jobs, provider_delay_s=delay, web="gunicorn gthread 1x8", worker="SlimyThreadWorker"),
    )
    try:
        harness.worker_warm(env, worker, job_type="bench_noop_chat")  # any runtime: it ran a chat job
        harness.wait_until(lambda: _status(port, "/health/live") == 200, 60, "web server", interval=0.2)
        ours = [_sse_sample(port, token, owner, fake, delay, i, LiveStream) for i in range(jobs)]
        direct = [_direct_sample(fake, delay, i) for i in range(jobs)]
    finally:
        worker.stop()
        web.stop()
        fake.stop()
    result.add(
        "first token -> first SSE event p50",
        percentile(ours, 50),
        "ms",
        BASELINE,
        percentile(direct, 50),
        higher_is_better=False,
    )
    result.add(
        "first token -> first SSE event p99",
        percentile(ours, 99),
        "ms",
        BASELINE,
        percentile(direct, 99),
        higher_is_better=False,
    )
    result.details = {"sse_ms": [round(v, 3) for v in ours], "direct_ms": [round(v, 3) for v in direct]}
    return result


def _status(port: int, path: str):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def _arrival(fake, marker: str) -> float:
    for request in reversed(fake.completion_requests):
        messages = request.body.get("messages") or []
        if messages and marker in str(messages[-1].get("content", "")):
            return request.at
    raise RuntimeError(f"the provider never saw {marker!r}")


def _sse_sample(port, token, owner, fake, delay, i, live_stream) -> float:
    from queues.services import job_enqueue

    marker = f"bench stream {i}"
    job = job_enqueue(job_type="chat_bot_interaction", payload={"prompt": marker}, owner=owner)
    stream = live_stream(port, f"/api/jobs/{job.pk}/events", token, timeout=30)
    try:
        while True:
            event = stream.next()
            if event is None:
                raise RuntimeError(f"stream of job {job.pk} ended without a chunk")
            if getattr(event, "kind", None) == "chunk":
                received = time.monotonic()
                break
    finally:
        stream.close()
    return (received - (_arrival(fake, marker) + delay)) * 1000


def _direct_sample(fake, delay, i) -> float:
    marker = f"bench direct {i}"
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=30)
    body = json.dumps({"model": "fake", "stream": True, "messages": [{"role": "user", "content": marker}]})
    conn.request(
        "POST",
        "/v1/chat/completions",
        body=body,
        headers={"Authorization": f"Bearer {fake.api_key}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    try:
        while True:
            line = response.readline()
            if not line:
                raise RuntimeError("provider stream ended without content")
            if line.startswith(b"data:") and b'"content": "' in line and b'"content": ""' not in line:
                received = time.monotonic()
                break
    finally:
        conn.close()
    return (received - (_arrival(fake, marker) + delay)) * 1000
