"""The fair dequeue building block against the private Redis: turn order, cap, release, dead workers."""

import asyncio

import redis.asyncio as aioredis
from django.conf import settings

from queues import fairness
from queues.fairness import (
    afair_pop,
    afair_push,
    afair_release,
    fair_held,
    fair_pop,
    fair_push,
    fair_release,
    fair_release_worker,
    fair_remove,
    fair_tenant_loads,
    fair_wait,
    tenant_loads_top,
)

Q = "chat"


def push(conn, tenant, job_id, priority="normal", cap=2):
    fair_push(conn=conn, queue=Q, priority=priority, tenant=tenant, job_id=job_id, cap=cap)


def pop(conn, worker="w1", cap=2, **kw):
    job = fair_pop(conn=conn, queue=Q, worker=worker, cap=cap, **kw)
    return None if job is None else job.job_id


def test_round_robin_across_tenants_in_submission_order(redis_conn):
    for i in range(5):
        push(redis_conn, "A", f"a{i}")
    push(redis_conn, "B", "b0")
    push(redis_conn, "C", "c0")
    push(redis_conn, "C", "c1")
    order = []
    while (job := fair_pop(conn=redis_conn, queue=Q, worker="w", cap=100)) is not None:
        order.append(job.job_id)
    # One job per tenant per turn, each tenant's jobs oldest first; a flood of A never starves B or C.
    assert order == ["a0", "b0", "c0", "a1", "c1", "a2", "a3", "a4"]


def test_cap_holds_a_tenant_back_until_a_slot_is_released(redis_conn):
    for i in range(4):
        push(redis_conn, "A", f"a{i}")
    assert [pop(redis_conn), pop(redis_conn)] == ["a0", "a1"]
    assert pop(redis_conn) is None  # A holds both its slots: its other jobs wait
    push(redis_conn, "B", "b0")
    assert pop(redis_conn) == "b0"  # another tenant is not held back by A
    assert fair_release(conn=redis_conn, queue=Q, job_ids=["a0"], cap=2) == 1
    assert pop(redis_conn) == "a2"
    assert pop(redis_conn) is None


def test_release_is_idempotent(redis_conn):
    push(redis_conn, "A", "a0")
    pop(redis_conn)
    assert fair_release(conn=redis_conn, queue=Q, job_ids=["a0"]) == 1
    assert fair_release(conn=redis_conn, queue=Q, job_ids=["a0"]) == 0
    assert redis_conn.hget("slimy:fair:chat:inflight", "A") is None


def test_higher_priority_first_and_the_cap_spans_priorities(redis_conn):
    push(redis_conn, "A", "a-low", priority="low")
    push(redis_conn, "A", "a-normal")
    push(redis_conn, "A", "a-high", priority="high")
    push(redis_conn, "B", "b-low", priority="low")
    assert pop(redis_conn) == "a-high"
    assert pop(redis_conn) == "a-normal"
    assert pop(redis_conn) == "b-low"  # A is at its cap (2) across priorities
    assert pop(redis_conn) is None
    fair_release(conn=redis_conn, queue=Q, job_ids=["a-high"], cap=2)
    assert pop(redis_conn) == "a-low"  # the release put A back in turn in the low list too


def test_pop_can_be_limited_to_some_priorities(redis_conn):
    push(redis_conn, "A", "a-low", priority="low")
    push(redis_conn, "A", "a-high", priority="high")
    assert pop(redis_conn, priorities=["low"]) == "a-low"


def test_cap_defaults_to_the_setting(redis_conn, settings):
    settings.CHAT_TENANT_CONCURRENCY = 1
    fair_push(conn=redis_conn, queue=Q, priority="normal", tenant="A", job_id="a0")
    fair_push(conn=redis_conn, queue=Q, priority="normal", tenant="A", job_id="a1")
    assert fair_pop(conn=redis_conn, queue=Q, worker="w").job_id == "a0"
    assert fair_pop(conn=redis_conn, queue=Q, worker="w") is None


def test_raising_the_cap_unparks_waiting_tenants(redis_conn):
    for i in range(3):
        push(redis_conn, "A", f"a{i}", cap=1)
    assert pop(redis_conn, cap=1) == "a0"
    assert pop(redis_conn, cap=1) is None
    assert pop(redis_conn, cap=3) == "a1"


def test_dead_worker_slots_are_released(redis_conn):
    for i in range(4):
        push(redis_conn, "A", f"a{i}")
    assert pop(redis_conn, worker="dead-1") == "a0"
    assert pop(redis_conn, worker="alive|2") == "a1"
    assert pop(redis_conn) is None
    assert {(s.job_id, s.worker) for s in fair_held(conn=redis_conn, queue=Q)} == {("a0", "dead-1"), ("a1", "alive|2")}
    assert fair_release_worker(conn=redis_conn, queue=Q, worker="dead-1", cap=2) == 1
    assert [s.job_id for s in fair_held(conn=redis_conn, queue=Q)] == ["a1"]
    assert pop(redis_conn) == "a2"
    assert fair_release_worker(conn=redis_conn, queue=Q, worker="dead-1", cap=2) == 0


def test_removed_job_never_pops_and_an_emptied_tenant_leaves_the_ring(redis_conn):
    push(redis_conn, "A", "a0")
    push(redis_conn, "B", "b0")
    assert fair_remove(conn=redis_conn, queue=Q, priority="normal", tenant="A", job_id="a0")
    assert not fair_remove(conn=redis_conn, queue=Q, priority="normal", tenant="A", job_id="a0")
    assert redis_conn.lrange("slimy:fair:chat:ring", 0, -1) == [b"B"]
    assert pop(redis_conn) == "b0"
    assert pop(redis_conn) is None


def test_empty_tenant_and_separator_are_kept_apart(redis_conn):
    push(redis_conn, "", "anon")
    push(redis_conn, "a|b", "odd")
    popped = {fair_pop(conn=redis_conn, queue=Q, worker="w").tenant for _ in range(2)}
    assert popped == {"-", "a/b"}


def test_loads_and_top_n_with_other(redis_conn):
    for i in range(5):
        push(redis_conn, "A", f"a{i}")
    push(redis_conn, "B", "b0", priority="high")
    push(redis_conn, "C", "c0")
    assert pop(redis_conn, priorities=["normal"]) == "a0"  # A: 1 in flight, 4 waiting
    loads = {t.tenant: (t.waiting, t.inflight) for t in fair_tenant_loads(conn=redis_conn, queue=Q)}
    assert loads["A"] == (4, 1)
    assert loads["B"] == (1, 0) and loads["C"] == (1, 0)
    top = tenant_loads_top(fair_tenant_loads(conn=redis_conn, queue=Q), top=1)
    assert [(t.tenant, t.waiting, t.inflight) for t in top] == [("A", 4, 1), ("other", 2, 0)]


def test_wait_wakes_on_push(redis_conn):
    assert not fair_wait(conn=redis_conn, queue=Q, timeout=0.05)
    push(redis_conn, "A", "a0")
    assert fair_wait(conn=redis_conn, queue=Q, timeout=0.05)
    # tokens are bounded however many pushes nobody waited for
    for i in range(200):
        push(redis_conn, "B", f"b{i}")
    assert redis_conn.llen("slimy:fair:chat:wake") == fairness.WAKE_BOUND


def test_many_pops_in_parallel_never_exceed_the_cap(redis_server):
    """Several processes' worth of clients popping at once: the Lua scripts keep the cap exact."""
    import threading

    import redis

    for i in range(60):
        push(redis.Redis.from_url(redis_server.url), f"T{i % 3}", f"j{i}", cap=2)
    seen, lock, peak = [], threading.Lock(), {}

    def consume():
        conn = redis.Redis.from_url(redis_server.url)
        while True:
            job = fair_pop(conn=conn, queue=Q, worker=threading.current_thread().name, cap=2)
            if job is None:
                if (
                    conn.hlen("slimy:fair:chat:held") == 0
                    and conn.llen("slimy:fair:chat:ring") == 0
                    and conn.scard("slimy:fair:chat:parked") == 0
                ):
                    return
                continue
            inflight = int(conn.hget("slimy:fair:chat:inflight", job.tenant))
            with lock:
                seen.append(job.job_id)
                peak[job.tenant] = max(peak.get(job.tenant, 0), inflight)
            fair_release(conn=conn, queue=Q, job_ids=[job.job_id], cap=2)

    threads = [threading.Thread(target=consume, name=f"w{i}") for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(seen) == sorted(f"j{i}" for i in range(60))
    assert max(peak.values()) <= 2


def test_asyncio_twins_share_the_structure(redis_server, redis_conn):
    async def scenario():
        conn = aioredis.Redis.from_url(redis_server.url)
        try:
            await afair_push(conn=conn, queue=Q, priority="normal", tenant="A", job_id="a0", cap=1)
            await afair_push(conn=conn, queue=Q, priority="normal", tenant="A", job_id="a1", cap=1)
            first = await afair_pop(conn=conn, queue=Q, worker="aw", cap=1)
            blocked = await afair_pop(conn=conn, queue=Q, worker="aw", cap=1)
            released = await afair_release(conn=conn, queue=Q, job_ids=[first.job_id], cap=1)
            return first, blocked, released
        finally:
            await conn.aclose()

    first, blocked, released = asyncio.run(scenario())
    assert first.job_id == "a0" and first.tenant == "A" and first.priority == "normal"
    assert blocked is None and released == 1
    assert pop(redis_conn, cap=1) == "a1"  # the sync client sees what the asyncio one did


def test_setting_default_is_two():
    assert settings.CHAT_TENANT_CONCURRENCY == 2


def test_push_many_in_one_round_trip_keeps_the_turns(redis_conn):
    from queues.fairness import fair_push_many

    fair_push_many(
        conn=redis_conn,
        queue=Q,
        items=[("normal", "A", "a0"), ("normal", "A", "a1"), ("normal", "B", "b0"), ("high", "C", "c0")],
        cap=5,
    )
    assert [pop(redis_conn, cap=5) for _ in range(5)] == ["c0", "a0", "b0", "a1", None]


def test_pop_many_takes_turns_and_stops_at_the_cap_in_one_round_trip(redis_server, redis_conn):
    from queues.fairness import afair_pop_many

    for i in range(4):
        push(redis_conn, "A", f"a{i}")
    push(redis_conn, "B", "b0")

    async def scenario():
        conn = aioredis.Redis.from_url(redis_server.url)
        try:
            return await afair_pop_many(conn=conn, queue=Q, worker="aw", count=10, cap=2)
        finally:
            await conn.aclose()

    popped = asyncio.run(scenario())
    assert [(j.job_id, j.tenant) for j in popped] == [("a0", "A"), ("b0", "B"), ("a1", "A")]
    assert {s.job_id: s.worker for s in fair_held(conn=redis_conn, queue=Q)} == {"a0": "aw", "b0": "aw", "a1": "aw"}


def test_pop_many_stops_at_count_in_one_script_run_and_leaves_the_rest_waiting(redis_server, redis_conn):
    from queues.fairness import afair_pop_many

    push(redis_conn, "A", "a0")
    push(redis_conn, "B", "b0")
    push(redis_conn, "A", "a1", priority="high")
    redis_conn.config_resetstat()

    async def scenario(count):
        conn = aioredis.Redis.from_url(redis_server.url)
        try:
            return await afair_pop_many(conn=conn, queue=Q, worker="aw", count=count, cap=5)
        finally:
            await conn.aclose()

    assert [j.job_id for j in asyncio.run(scenario(2))] == ["a1", "a0"]  # high first, then normal in turn
    assert [j.job_id for j in asyncio.run(scenario(1000))] == ["b0"]
    assert asyncio.run(scenario(1000)) == []
    stats = redis_conn.info("commandstats")
    scripts = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    assert scripts <= 4  # one run per call (plus a load of the script), not one per job asked for


def test_waiting_count_ids_and_heads_follow_the_lines(redis_conn):
    from queues.fairness import fair_waiting_count, fair_waiting_heads, fair_waiting_ids

    push(redis_conn, "A", "a0")
    push(redis_conn, "A", "a1")
    push(redis_conn, "B", "b0", priority="low")
    assert fair_waiting_count(conn=redis_conn, queue=Q) == 3
    assert fair_waiting_ids(conn=redis_conn, queue=Q) == {"a0", "a1", "b0"}
    assert sorted(fair_waiting_heads(conn=redis_conn, queue=Q)[1]) == ["a0", "b0"]
    assert pop(redis_conn) == "a0" and pop(redis_conn) == "a1"
    assert fair_waiting_ids(conn=redis_conn, queue=Q) == {"b0"} and fair_waiting_count(conn=redis_conn, queue=Q) == 1
