"""BatchedRedis on the private Redis: many coroutines' commands in one round trip, each its own answer."""

from __future__ import annotations

import asyncio

import pytest
from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from queues.redis_batch import BatchedRedis


def run(scenario, url: str):
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            return await scenario(client, BatchedRedis(client))
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_commands_of_many_coroutines_share_one_round_trip_and_each_gets_its_answer(redis_server, redis_conn):
    redis_conn.set("rb:a", "1")
    redis_conn.config_resetstat()

    async def scenario(client, batched):
        async def one(i):
            async with batched.pipeline() as pipe:
                pipe.incrby(f"rb:n{i % 3}", i).expire(f"rb:n{i % 3}", 60)
                charged, _ = await pipe.execute()
            return charged, await batched.get("rb:a"), await batched.exists("rb:a", "rb:none")

        answers = await asyncio.gather(*(one(i) for i in range(30)))
        deleted = await batched.delete("rb:a")
        return answers, deleted

    answers, deleted = run(scenario, redis_server.url)
    assert [get for _, get, _ in answers] == [b"1"] * 30 and [n for *_, n in answers] == [1] * 30
    assert deleted == 1
    # Every INCRBY answered the running total of its key, in submission order.
    for key in range(3):
        totals = [charged for i, (charged, *_) in enumerate(answers) if i % 3 == key]
        assert totals == [sum(i for i in range(30) if i % 3 == key and i <= j) for j in range(30) if j % 3 == key]
    assert redis_conn.ttl("rb:n0") > 0
    stats = redis_conn.info("commandstats")
    # 30 INCRBY, 30 EXPIRE, 30 GET, 30 EXISTS, 1 DEL: in a handful of pipelines, not 121 round trips.
    assert stats["cmdstat_incrby"]["calls"] == 30 and stats["cmdstat_get"]["calls"] == 30


def test_an_error_fails_only_its_own_caller(redis_server, redis_conn):
    redis_conn.set("rb:text", "not a number")

    async def scenario(client, batched):
        return await asyncio.gather(
            batched.incrby("rb:text", 1), batched.get("rb:text"), batched.set("rb:x", "1"), return_exceptions=True
        )

    error, value, set_answer = run(scenario, redis_server.url)
    assert isinstance(error, ResponseError)
    assert value == b"not a number" and set_answer is True


def test_a_failed_round_trip_fails_every_caller_and_other_commands_go_to_the_client(redis_server):
    async def scenario(client, batched):
        assert await batched.eval("return 7", 0) == 7  # not batched: the client's own
        await client.aclose()
        dead = BatchedRedis(aioredis.Redis.from_url("redis://127.0.0.1:1/0"))
        return await asyncio.gather(dead.get("a"), dead.delete("b"), return_exceptions=True)

    answers = run(scenario, redis_server.url)
    assert all(isinstance(a, Exception) for a in answers)


def test_a_pipeline_group_refuses_commands_it_does_not_batch(redis_server):
    async def scenario(client, batched):
        with pytest.raises(AttributeError):
            batched.pipeline().blpop("x")

    run(scenario, redis_server.url)
