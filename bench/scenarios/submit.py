"""submit: HTTP job submissions/s and p50/p99 latency of ONE web process at fixed client concurrency.

The web process is what `make run` starts (gunicorn, gthread, 8 threads), here with one process and
rate limits raised out of the way (the limiter's Redis call still runs). Submission = `POST
/api/chat/conversations` (a `create_conversation` job: validation, ledger row, push to Redis,
202). Baseline: `GET /health/live` on the same server, same client, same run. No workers run: jobs
just wait, which is what a submission costs. Then the same loads against the server `make run` starts
(uvicorn workers, slimy_site.asgi): its POST figures beside its own `/health/live` (the target's ratio),
and its rates beside gthread's from the same run.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time

from bench import harness
from bench.harness import BenchEnv, Result
from bench.stats import percentile

NAME = "submit"
DEFAULTS = dict(jobs=3000, processes=1, repeat=1, concurrency=8)
SMOKE = dict(jobs=40, processes=1, repeat=1, concurrency=4)
BASELINE = "GET /health/live"
UNLIMITED = "submit=1000000000/min,read=1000000000/min,write=1000000000/min"


def _token() -> str:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from slimy_site.services import api_token_issue

    user, _ = get_user_model().objects.get_or_create(username="bench-submit")
    user.groups.add(Group.objects.get_or_create(name="member")[0])
    return api_token_issue(user=user)


def run(env: BenchEnv, *, jobs: int, processes: int, concurrency: int, **_) -> Result:
    from bench.ledger import ledger_clear

    env.redis().flushdb()
    ledger_clear()
    token = _token()
    port = harness.free_port()
    server = harness.start(
        env,
        harness.gthread_argv(port, processes=processes),
        "submit-web",
        API_RATE_LIMITS=UNLIMITED,
        LOG_LEVEL="WARNING",
    )
    result = Result(
        NAME,
        env,
        params=dict(
            requests=jobs, web_processes=processes, client_concurrency=concurrency, server="gunicorn gthread, 8 threads"
        ),
    )
    try:
        harness.wait_until(lambda: _get(port, "/health/live") == 200, 60, "web server start", interval=0.2)
        health = _load(port, "GET", "/health/live", None, {}, jobs, concurrency, 200)
        body = json.dumps({"title": "bench"}).encode()
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        submit = _load(port, "POST", "/api/chat/conversations", body, headers, jobs, concurrency, 202)
    finally:
        server.stop()
    ours = _make_run_server(env, token, jobs, processes, concurrency)
    per_process = lambda rate: rate / processes  # noqa: E731
    result.add("POST submissions", per_process(submit["rate"]), "req/s/process", BASELINE, per_process(health["rate"]))
    result.add("POST p50", submit["p50"], "ms", BASELINE, health["p50"], higher_is_better=False)
    result.add("POST p99", submit["p99"], "ms", BASELINE, health["p99"], higher_is_better=False)
    # The target on the server `make run` starts: POST against /health/live on that same server.
    result.add(
        "make-run server POST submissions",
        per_process(ours["submit"]["rate"]),
        "req/s/process",
        "make-run server GET /health/live",
        per_process(ours["health"]["rate"]),
    )
    result.add(
        "make-run server POST p50", ours["submit"]["p50"], "ms", BASELINE, ours["health"]["p50"], higher_is_better=False
    )
    result.add(
        "make-run server POST p99", ours["submit"]["p99"], "ms", BASELINE, ours["health"]["p99"], higher_is_better=False
    )
    # Before/after for the web server itself: `make run`'s (uvicorn workers, WSGI routes on threads) vs gthread.
    result.add(
        "make-run server POST submissions, vs gthread",
        per_process(ours["submit"]["rate"]),
        "req/s/process",
        "gthread POST submissions",
        per_process(submit["rate"]),
    )
    result.add(
        "make-run server GET /health/live",
        per_process(ours["health"]["rate"]),
        "req/s/process",
        "gthread GET /health/live",
        per_process(health["rate"]),
    )
    result.details = {"submit": submit, "health": health, "make_run_server": ours}
    return result


def _make_run_server(env, token, jobs, processes, concurrency) -> dict:
    """The same loads against the web server `make run` starts (slimy_site.runall.web_child)."""
    from slimy_site.runall import web_child

    port = harness.free_port()
    argv = web_child(host="127.0.0.1", port=port, python=sys.executable, processes=processes).argv
    server = harness.start(env, argv, "submit-web-make-run", API_RATE_LIMITS=UNLIMITED, LOG_LEVEL="WARNING")
    try:
        harness.wait_until(lambda: _get(port, "/health/live") == 200, 60, "web server start", interval=0.2)
        health = _load(port, "GET", "/health/live", None, {}, jobs, concurrency, 200)
        body = json.dumps({"title": "bench"}).encode()
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        submit = _load(port, "POST", "/api/chat/conversations", body, headers, jobs, concurrency, 202)
    finally:
        server.stop()
    return {"submit": submit, "health": health}


def _get(port: int, path: str) -> int | None:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return None


def _load(port, method, path, body, headers, total, concurrency, expected) -> dict:
    latencies, errors, lock = [], [], threading.Lock()
    remaining = [total]

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if remaining[0] <= 0:
                    break
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                status = response.status
                if status != expected:  # say why: the error code of the usual error body
                    status = f"{status} {answer[:200].decode(errors='replace')}"
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = repr(exc)
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                (latencies if status == expected else errors).append(elapsed if status == expected else status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    window = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{method} {path}: {len(errors)} unexpected answers, e.g. {errors[:3]}")
    return {
        "rate": total / window,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies),
        "requests": total,
    }
