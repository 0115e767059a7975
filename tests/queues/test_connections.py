"""The web process's bound on Redis connections: its request threads take turns on a few."""

import threading

import pytest
from redis import Redis

from queues.connections import connections_bound, get_connection, redis_ping


@pytest.fixture
def bounded():
    connections_bound(2)
    yield
    connections_bound(None)


def _busy():
    # A command that keeps its connection for a moment (~0.5 ms), so that the threads really overlap.
    return get_connection().eval("local i = 0 while i < 20000 do i = i + 1 end return i", 0)


def _clients(url: str) -> int:
    return len(Redis.from_url(url).client_list())


def _hammer(fn, threads: int = 8, rounds: int = 50) -> None:
    barrier = threading.Barrier(threads)
    errors = []

    def run():
        barrier.wait()
        try:
            for _ in range(rounds):
                fn()
        except Exception as exc:  # noqa: BLE001 - collected: a thread's failure must fail the test
            errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert not errors


def test_eight_threads_share_two_connections_per_client(bounded, settings):
    before = _clients(settings.REDIS_URL)
    _hammer(lambda: _busy())
    _hammer(redis_ping)
    opened = _clients(settings.REDIS_URL) - before - 1  # less the counting client itself
    assert 1 <= opened <= 4


def test_unbounded_clients_open_one_connection_per_busy_thread(settings):
    # What the bound prevents (the worker keeps it: its threads are few and fixed).
    connections_bound(None)
    before = _clients(settings.REDIS_URL)
    _hammer(lambda: _busy())
    assert _clients(settings.REDIS_URL) - before - 1 > 2
