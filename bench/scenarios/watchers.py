"""watchers: many SSE clients, each watching a different job, from ONE web process while the jobs stream tokens.

Jobs: `started` ledger rows of the bench user whose output is written the way a chat worker writes it
(a segment, then one XADD per token, `queues.output`'s format) by a producer in the bench process,
`chunks` rounds of one token per job, `interval` s apart; then every log is closed and every row
marked completed. No LLM and no worker run: what is measured is the web side alone.

Clients: `watchers` SSE connections on one asyncio loop in the bench process (raw sockets, chunked
HTTP/1.1), each checking that it got every chunk exactly once, in order, and the final state (the run
fails otherwise). Meanwhile another process asks `GET /health/live` every 20 ms.

Figures: token (XADD) -> client event delay p50/p99, /health/live p99, Redis connections of the web
process, its memory per open stream and its CPU time per delivered chunk. Server: `make run`'s (gunicorn + SlimyUvicornWorker, one
process). Baseline, same run, same producer and clients: today's server, gunicorn `gthread` with one
thread per stream plus the 8 it has for everything else — with `baseline_watchers` streams, because
each of its streams also holds a PostgreSQL session (a thousand would exceed `max_connections`).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import resource
import subprocess
import sys
import time
import uuid

import psutil
import uvloop

from bench import harness
from bench.harness import BenchEnv, Result
from bench.stats import percentile

NAME = "watchers"
DEFAULTS = dict(jobs=1000, baseline_watchers=40, chunks=10, interval=1.0)  # jobs = watchers (one job each)
SMOKE = dict(jobs=20, baseline_watchers=5, chunks=4, interval=0.05)
BASELINE = "gthread, thread per stream"
UNLIMITED = "submit=1000000000/min,read=1000000000/min,write=1000000000/min"


def run(env: BenchEnv, *, jobs: int, baseline_watchers: int, chunks: int, interval: float, **_) -> Result:
    watchers = jobs
    from bench.ledger import ledger_clear
    from bench.scenarios.submit import _token

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * watchers + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the clients and the server inherit it
    env.redis().flushdb()
    ledger_clear()
    token = _token()
    ours = _measure(env, token, "ours", watchers, chunks, interval, _ours_argv)
    theirs = _measure(env, token, "gthread", baseline_watchers, chunks, interval, _gthread_argv(baseline_watchers))
    result = Result(
        NAME,
        env,
        params=dict(
            watchers=watchers,
            baseline_watchers=baseline_watchers,
            chunks_per_job=chunks,
            round_interval_s=interval,
            web="gunicorn + SlimyUvicornWorker, 1 process (make run's)",
            baseline=f"gunicorn gthread, 1 process, {baseline_watchers + 8} threads",
            producer="output log written directly (queues.output format), ledger rows updated",
        ),
    )
    result.add(
        "token -> client event p50", ours["delay_p50"], "ms", BASELINE, theirs["delay_p50"], higher_is_better=False
    )
    result.add(
        "token -> client event p99", ours["delay_p99"], "ms", BASELINE, theirs["delay_p99"], higher_is_better=False
    )
    result.add(
        "/health/live p99 during streams",
        ours["health_p99"],
        "ms",
        BASELINE,
        theirs["health_p99"],
        higher_is_better=False,
    )
    result.add(
        "Redis connections of the web process",
        ours["redis_connections"],
        "connections",
        BASELINE,
        theirs["redis_connections"],
        higher_is_better=False,
        note=f"{watchers} streams vs {baseline_watchers}",
    )
    result.add(
        "web CPU per delivered chunk",
        ours["cpu_ms_per_chunk"],
        "ms",
        BASELINE,
        theirs["cpu_ms_per_chunk"],
        higher_is_better=False,
    )
    result.add(
        "memory per open stream",
        ours["kib_per_stream"],
        "KiB",
        BASELINE,
        theirs["kib_per_stream"],
        higher_is_better=False,
    )
    result.details = {"ours": ours, "gthread": theirs}
    return result


def _ours_argv(port: int) -> list[str]:
    from slimy_site.runall import web_child

    return web_child(host="127.0.0.1", port=port, python=sys.executable, processes=1).argv


def _gthread_argv(streams: int):
    def argv(port: int) -> list[str]:
        return harness.gthread_argv(port, threads=streams + 8)

    return argv


def _measure(env: BenchEnv, token: str, name: str, watchers: int, chunks: int, interval: float, argv) -> dict:
    from django.contrib.auth import get_user_model

    owner = get_user_model().objects.get(username="bench-submit")
    env.redis().flushdb()  # nothing of the previous server's run (logs, stream slots) stays
    port = harness.free_port()
    server = harness.start(
        env,
        argv(port),
        f"watchers-{name}",
        API_RATE_LIMITS=UNLIMITED,
        LOG_LEVEL="WARNING",
        API_MAX_STREAMS_PER_USER=str(watchers + 10),
        JOB_EVENTS_HEARTBEAT="5",
    )
    try:
        harness.wait_until(lambda: _status(port, "/health/live") == 200, 90, "web server", interval=0.2)
        worker = psutil.Process(server.pid).children()[0]
        for _ in range(20):
            _status(port, "/health/live")  # warm: threads started, connections opened
        idle_rss = worker.memory_info().rss
        jobs = _jobs(owner, watchers)
        cpu = worker.cpu_times()
        # The clients run on uvloop, as the server does: the bench process's own overhead stays small.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            outcome = runner.run(_watch(env, port, token, jobs, chunks, interval, worker))
        cpu_after = worker.cpu_times()
        cpu_seconds = (cpu_after.user + cpu_after.system) - (cpu.user + cpu.system)
    finally:
        server.stop()
    delays = outcome["delays"]
    return {
        "watchers": watchers,
        "chunks_checked": len(delays),
        "delay_p50": percentile(delays, 50),
        "delay_p99": percentile(delays, 99),
        "delay_max": max(delays),
        "health_p50": percentile(outcome["health"], 50),
        "health_p99": percentile(outcome["health"], 99),
        "health_requests": len(outcome["health"]),
        "redis_connections": outcome["redis_connections"],
        "rss_idle_mib": round(idle_rss / 2**20, 1),
        "rss_peak_mib": round(outcome["rss_peak"] / 2**20, 1),
        "kib_per_stream": max(outcome["rss_peak"] - idle_rss, 1024) / 1024 / watchers,
        "open_seconds": round(outcome["open_seconds"], 2),
        # Web-process CPU for the whole run (opening the streams, every event, the final states) per
        # delivered chunk: less sensitive than latency to what else the machine runs.
        "cpu_seconds": round(cpu_seconds, 2),
        "cpu_ms_per_chunk": cpu_seconds * 1000 / len(delays),
    }


def _jobs(owner, count: int) -> list[str]:
    from queues.models import JobRecord

    records = [
        JobRecord(
            id=uuid.uuid4(),
            job_type="chat_bot_interaction",
            queue="chat",
            owner=owner,
            payload={"prompt": "bench"},
            status="started",
            attempts=1,
        )
        for _ in range(count)
    ]
    JobRecord.objects.bulk_create(records, batch_size=500)
    return [str(r.id) for r in records]


async def _watch(env, port, token, jobs, chunks, interval, worker) -> dict:
    from queues.output import output_writer_open

    clients = [_Client(port, token, job_id) for job_id in jobs]
    started = time.monotonic()
    tasks = [asyncio.create_task(c.run()) for c in clients]
    await _until(lambda: all(c.opened or c.error for c in clients), 300, "every stream to open")
    opened = time.monotonic() - started
    _raise_client_errors(clients)
    await _until(lambda: all(c.states for c in clients), 120, "every stream's first state")

    # The probe runs in its own process: a thread here would wait on this process's GIL (the 1,000 clients).
    prober = subprocess.Popen(
        [sys.executable, "-c", _PROBE, str(port), str(chunks * interval + 3)], stdout=subprocess.PIPE, text=True
    )
    writers = [output_writer_open(job_id=job_id, job_type="chat_bot_interaction", attempt=1) for job_id in jobs]
    written: dict[tuple[str, int], float] = {}
    conn = env.redis()
    rss_peak, redis_connections = 0, 0
    try:
        for n in range(chunks):
            # One token per job, pipelined; each is stamped just before its batch is sent.
            await asyncio.to_thread(_write_round, conn, writers, jobs, n, written)
            rss_peak = max(rss_peak, worker.memory_info().rss)
            redis_connections = max(redis_connections, _redis_connections(worker.pid, env))
            await asyncio.sleep(interval)
        for writer in writers:
            writer.close()
        await asyncio.to_thread(_complete, jobs)
        await _until(lambda: all(c.done or c.error for c in clients), 120, "every final state")
    finally:
        health = json.loads((await asyncio.to_thread(prober.communicate, timeout=120))[0] or "[]")
        for task in tasks:
            task.cancel()
    _raise_client_errors(clients)
    expected = [f"r{n} " for n in range(chunks)]
    delays = []
    for client in clients:
        texts = [text for text, _ in client.chunks]
        if texts != expected:
            raise RuntimeError(
                f"job {client.job_id}: chunks {texts[:5]}... != {expected[:5]}... ({len(texts)} of {len(expected)})"
            )
        if client.states[-1] != "completed":
            raise RuntimeError(f"job {client.job_id} ended in {client.states[-1]!r}")
        delays += [(received - written[(client.job_id, n)]) * 1000 for n, (_, received) in enumerate(client.chunks)]
    return {
        "delays": delays,
        "health": health,
        "rss_peak": rss_peak,
        "redis_connections": redis_connections,
        "open_seconds": opened,
    }


def _complete(jobs) -> None:
    from django.db import connections

    from queues.models import JobRecord

    try:
        JobRecord.objects.filter(pk__in=jobs).update(status="completed", result={"reply": "done"})
    finally:
        connections.close_all()  # this pool thread's session must not outlive the run


def _write_round(conn, writers, jobs, n, written) -> None:
    from queues.output import CHUNK, MAX_ENTRIES

    for start in range(0, len(writers), 100):
        pipe = conn.pipeline(transaction=False)
        batch = list(zip(jobs[start : start + 100], writers[start : start + 100]))
        for _job_id, writer in batch:
            pipe.xadd(
                writer.key,
                {"type": CHUNK, "attempt": writer.attempt, "text": f"r{n} "},
                maxlen=MAX_ENTRIES,
                approximate=True,
            )
        stamp = time.monotonic()
        pipe.execute()
        for job_id, _writer in batch:
            written[(job_id, n)] = stamp


def _redis_connections(pid: int, env) -> int:
    redis_port = int(env.redis_url.rsplit(":", 1)[1].split("/")[0])
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == redis_port and c.status == psutil.CONN_ESTABLISHED
    )


_PROBE = """
import http.client, json, sys, time
port, until = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
latencies, conn = [], http.client.HTTPConnection("127.0.0.1", port, timeout=30)
while time.monotonic() < until:
    began = time.perf_counter()
    try:
        conn.request("GET", "/health/live")
        response = conn.getresponse()
        response.read()
    except (OSError, http.client.HTTPException):
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies.append((time.perf_counter() - began) * 1000)
    time.sleep(0.02)
print(json.dumps(latencies))
"""


def _status(port: int, path: str):
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status
    except OSError:
        return None


async def _until(predicate, timeout, what) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _raise_client_errors(clients) -> None:
    failed = [c for c in clients if c.error]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(clients)} streams failed, e.g. {failed[0].error}")


class _Client(asyncio.Protocol):
    """One SSE client on a raw socket: HTTP/1.1, chunked body, events parsed as they arrive.

    Each piece of the body is stamped in `data_received`, when the loop hands it over, and parsed a
    moment later (`call_soon`): a thousand clients parsing in turn would otherwise add their own
    parsing time to the delays of the clients read after them.
    """

    def __init__(self, port: int, token: str, job_id: str):
        self.port, self.token, self.job_id = port, token, job_id
        self.opened = self.done = False
        self.error: str | None = None
        self.chunks: list[tuple[str, float]] = []
        self.states: list[str] = []
        self._pieces: list[tuple[float, bytes]] = []
        self._parse_due = False
        self._head = b""
        self._body = b""  # the chunked body not yet decoded
        self._events = b""  # decoded body text not yet split into events
        self._closed = asyncio.Event()
        self._transport = None

    async def run(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            self._transport, _ = await loop.create_connection(lambda: self, "127.0.0.1", self.port)
            self._transport.write(
                (
                    f"GET /api/jobs/{self.job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Token {self.token}\r\nAccept: text/event-stream\r\n\r\n"
                ).encode()
            )
            await self._closed.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by the scenario, which then fails
            self.error = repr(exc)
        finally:
            if self._transport is not None:
                self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._pieces.append((time.monotonic(), data))
        if not self._parse_due:
            self._parse_due = True
            asyncio.get_running_loop().call_soon(self._parse)

    def connection_lost(self, exc) -> None:
        if not self.done and self.error is None:
            self.error = f"connection lost before the final state ({exc!r})"
        self._closed.set()

    def _fail(self, error: str) -> None:
        self.error = error
        self._closed.set()

    def _parse(self) -> None:
        self._parse_due = False
        pieces, self._pieces = self._pieces, []
        for received, data in pieces:
            if self.done or self.error:
                return
            if not self.opened:
                self._head += data
                if b"\r\n\r\n" not in self._head:
                    continue
                head, data = self._head.split(b"\r\n\r\n", 1)
                head = head.decode("latin-1")
                status = int(head.split(" ", 2)[1])
                if status != 200:
                    return self._fail(f"HTTP {status}")
                if "transfer-encoding: chunked" not in head.lower():
                    return self._fail("expected a chunked body")
                self.opened = True
            self._body += data
            ended = False
            while b"\r\n" in self._body:
                size_line, rest = self._body.split(b"\r\n", 1)
                size = int(size_line.strip() or b"0", 16)
                if size == 0:
                    ended = True
                    break
                if len(rest) < size + 2:
                    break
                self._events += rest[:size]
                self._body = rest[size + 2 :]
            while b"\n\n" in self._events:
                raw, self._events = self._events.split(b"\n\n", 1)
                self._event(raw.decode(), received)
            if self.done:
                self._closed.set()
            elif ended:
                return self._fail("the stream ended before the final state")

    def _event(self, raw: str, received: float) -> None:
        fields = {}
        for line in raw.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        if fields.get("event") == "chunk":
            self.chunks.append((json.loads(fields["data"])["text"], received))
        elif fields.get("event") == "state":
            status = json.loads(fields["data"])["status"]
            self.states.append(status)
            if status in ("completed", "failed", "cancelled", "gone"):
                self.done = True
