"""Dramatiq and Huey set up for the throughput baselines: a no-op task on the bench's private Redis.

Both libraries are benchmark-only dependencies (`pip install -e ".[bench]"`). Their worker CLIs import a
module and look for a broker / Huey instance in it, so `bench.dramatiq_app` and `bench.huey_app` build
one from BENCH_REDIS_URL when imported by those CLIs; the bench process builds its own (same names) to
enqueue. Nothing here is imported by Slimy itself.

Timing without touching the jobs: the no-op task keeps, in memory, when the first job of its process
started, when the last one ended and how many ran; a thread publishes those three numbers every 50 ms
(`HSET bench:competitor:window <pid> "first last count"`). The bench sums the counts of all processes
and takes first start to last end: the window the ledger gives Slimy (first started_at to last
finished_at) and RQ gives the plain-RQ baseline, at no Redis round trip per job.
"""

from __future__ import annotations

import os
import threading
import time

WINDOW_KEY = "bench:competitor:window"
DRAMATIQ_QUEUE = "bench-dramatiq"
HUEY_NAME = "bench-huey"


class JobWindow:
    """First start, last end and count of the jobs this process ran, published by a thread of its own."""

    def __init__(self, publish, interval: float = 0.05):
        self._publish = publish
        self._interval = interval
        self._lock = threading.Lock()
        self.first: float | None = None
        self.last = 0.0
        self.done = 0
        self._publisher: threading.Thread | None = None

    def started(self) -> None:
        if self.first is None:
            with self._lock:
                if self.first is None:
                    self.first = time.time()
                    self._publisher = threading.Thread(target=self._publish_loop, name="bench-window", daemon=True)
                    self._publisher.start()

    def finished(self) -> None:
        now = time.time()
        with self._lock:
            self.done += 1
            self.last = now

    def snapshot(self) -> str:
        with self._lock:
            return f"{self.first} {self.last} {self.done}"

    def _publish_loop(self) -> None:
        published = None
        while True:
            value = self.snapshot()
            if value != published:
                self._publish(value)
                published = value
            time.sleep(self._interval)


def window_read(conn) -> tuple[int, float, float]:
    """(jobs run, first start, last end) over every process that published; (0, 0, 0) before any did."""
    rows = [raw.decode().split() for raw in conn.hgetall(WINDOW_KEY).values()]
    if not rows:
        return 0, 0.0, 0.0
    return (
        sum(int(done) for _, _, done in rows),
        min(float(first) for first, _, _ in rows),
        max(float(last) for _, last, _ in rows),
    )


def dramatiq_setup(url: str):
    """(broker, no-op actor) on Redis `url`; the broker becomes Dramatiq's global one (its CLI needs that)."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=url)
    dramatiq.set_broker(broker)
    window = JobWindow(lambda value: broker.client.hset(WINDOW_KEY, str(os.getpid()), value))

    def bench_noop():
        window.started()
        window.finished()

    actor = dramatiq.actor(bench_noop, broker=broker, actor_name="bench_noop", queue_name=DRAMATIQ_QUEUE, max_retries=0)
    return broker, actor


def huey_setup(url: str):
    """(huey, no-op task) on Redis `url`; BRPOP-based (blocking) consumer, no results stored."""
    from huey import RedisHuey

    huey = RedisHuey(HUEY_NAME, url=url, results=False)
    window = JobWindow(lambda value: huey.storage.conn.hset(WINDOW_KEY, str(os.getpid()), value))

    @huey.task(name="bench_noop")
    def bench_noop():
        window.started()
        window.finished()

    return huey, bench_noop
