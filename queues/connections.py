"""The one place that builds Redis connections and RQ queues (lazily, never at import time)."""

import weakref

from django.conf import settings
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue

from queues.constants import PRIORITY_ORDER, rq_queue_name

_connections: dict[tuple[str, float], Redis] = {}


def connection_for(url: str, timeout: float) -> Redis:
    """One shared client per (URL, socket timeout): callers that must not wait long pass a short timeout."""
    key = (url, timeout)
    conn = _connections.get(key)
    if conn is None:
        conn = _connections[key] = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 2.0), health_check_interval=30
        )
    return conn


def get_connection() -> Redis:
    return connection_for(settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT)


# One asyncio client per event loop (a client's connections belong to the loop that opened them).
_async_connections: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# Connections one event loop may open: a thousand coroutines share them (a command waits for a free one).
ASYNC_MAX_CONNECTIONS = 8
# How long a command may wait for one of them (a busy loop's commands queue up; they do not fail).
ASYNC_POOL_WAIT_SECONDS = 30


def get_async_connection():
    """The `redis.asyncio` client of the running event loop (output log writes from async jobs)."""
    import asyncio

    from redis.asyncio import BlockingConnectionPool
    from redis.asyncio import Redis as AsyncRedis

    loop = asyncio.get_running_loop()
    conn = _async_connections.get(loop)
    if conn is None:
        pool = BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=ASYNC_MAX_CONNECTIONS,
            timeout=ASYNC_POOL_WAIT_SECONDS,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=min(settings.REDIS_SOCKET_TIMEOUT, 2.0),
        )
        conn = _async_connections[loop] = AsyncRedis(connection_pool=pool)
    return conn


def get_rq_queue(queue: str, priority: str = "normal") -> Queue:
    return Queue(rq_queue_name(queue, priority), connection=get_connection(), default_timeout=600)


def get_rq_queues(queue: str) -> list[Queue]:
    return [get_rq_queue(queue, p) for p in PRIORITY_ORDER]


def redis_ping(timeout: float = 0.5) -> bool:
    """True when Redis answers within `timeout`; lets callers fail fast instead of hanging."""
    try:
        return bool(connection_for(settings.REDIS_URL, timeout).ping())
    except (RedisError, OSError):
        return False


def reset_connections() -> None:
    """Forget cached connections (after a fork, or when tests point REDIS_URL elsewhere)."""
    for conn in _connections.values():
        conn.close()
    _connections.clear()
    _async_connections.clear()
