"""The output hub: one Redis reader fanning output-log entries out to many watchers (real Redis, real ledger)."""

import asyncio

import pytest

from queues.api import output_watch
from queues.api.output_watch import OutputHub
from queues.output import output_writer_open
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


async def _until(predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _texts(watch):
    return [e["text"] for e in watch.entries if e["type"] == "chunk"]


def _jobs(user, n):
    return [str(job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user).pk) for _ in range(n)]


def _hub_connections(redis_conn):
    return {c["id"] for c in redis_conn.client_list() if c["name"].startswith("slimy-web-streams")}


def test_two_hundred_watchers_share_one_reader_and_get_their_own_entries(user, redis_server, redis_conn):
    jobs = _jobs(user, 200)
    writers = [output_writer_open(job_id=job_id, job_type="test_echo", attempt=1) for job_id in jobs]

    # Only this hub's connections count: a hub of an earlier test (another loop) may not have closed yet.
    before = _hub_connections(redis_conn)

    async def scenario():
        hub = OutputHub(redis_server.url)
        watches = [hub.watch(job_id=job_id, cursor="0") for job_id in jobs]
        for i, writer in enumerate(writers):
            await asyncio.to_thread(writer.write, f"job {i}")
        await _until(lambda: all(_texts(w) for w in watches))
        connections = len(_hub_connections(redis_conn) - before)
        await hub.close()
        return watches, connections

    watches, connections = asyncio.run(scenario())
    assert connections <= 3
    for i, watch in enumerate(watches):
        assert [e["type"] for e in watch.entries] == ["segment", "chunk"]
        assert _texts(watch) == [f"job {i}"]


def test_a_watcher_joining_further_back_gets_everything_once(user, redis_server):
    [job_id] = _jobs(user, 1)
    writer = output_writer_open(job_id=job_id, job_type="test_echo", attempt=1)

    async def scenario():
        hub = OutputHub(redis_server.url)
        ahead = hub.watch(job_id=job_id, cursor="0")
        for i in range(3):
            await asyncio.to_thread(writer.write, f"a{i}")
        await _until(lambda: len(_texts(ahead)) == 3)
        # The reader is blocked past a2 when this one joins from the start; an entry lands at once.
        behind = hub.watch(job_id=job_id, cursor="0")
        await asyncio.to_thread(writer.write, "a3")
        await _until(lambda: len(_texts(behind)) == 4 and len(_texts(ahead)) == 4)
        await asyncio.to_thread(writer.write, "a4")
        await _until(lambda: len(_texts(behind)) == 5 and len(_texts(ahead)) == 5)
        await asyncio.sleep(0.2)
        await hub.close()
        return ahead, behind

    ahead, behind = asyncio.run(scenario())
    assert _texts(ahead) == _texts(behind) == ["a0", "a1", "a2", "a3", "a4"]


def test_a_joining_watcher_wakes_the_blocked_read(user, redis_server, monkeypatch):
    # With the read blocking 60 s, only the wake-up (CLIENT UNBLOCK) lets a new watcher be served soon.
    monkeypatch.setattr(output_watch, "BLOCK_MS", 60_000)
    first, second = _jobs(user, 2)
    output_writer_open(job_id=second, job_type="test_echo", attempt=1).write("waiting for you")

    async def scenario():
        hub = OutputHub(redis_server.url)
        hub.watch(job_id=first, cursor="0")
        await asyncio.sleep(0.5)  # the reader is now blocked on the first job's log
        late = hub.watch(job_id=second, cursor="0")
        await _until(lambda: _texts(late) == ["waiting for you"], timeout=10)
        await hub.close()

    asyncio.run(scenario())


def test_unwatched_logs_leave_the_read(user, redis_server):
    jobs = _jobs(user, 2)

    async def scenario():
        hub = OutputHub(redis_server.url)
        watches = [hub.watch(job_id=job_id, cursor="0") for job_id in jobs]
        assert hub.watch_count == 2
        hub.unwatch(watches[0])
        hub.unwatch(watches[0])  # twice is harmless
        assert hub.watch_count == 1 and set(hub._cursors) == {watches[1].key}
        await hub.close()

    asyncio.run(scenario())
