"""The one place that builds Redis connections and RQ queues (lazily, never at import time)."""

import threading
import weakref

import hiredis
from django.conf import settings
from redis import BlockingConnectionPool, Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError
from rq import Queue

from queues.constants import PRIORITY_ORDER, rq_queue_name
from slimy_site.tracing import tracing_active

_connections: dict[tuple[str, float], Redis] = {}
_connections_lock = threading.Lock()
# Connections each shared client may open; None: one per thread that uses it at once. The web process
# bounds it (slimy_site.asgi): its request threads take turns on a few, so however many streams it
# serves, it holds a handful of Redis connections (commands take well under a millisecond).
_sync_max_connections: int | None = None


def connections_bound(max_per_client: int | None) -> None:
    """Bound the connections of every shared synchronous client of this process from now on."""
    global _sync_max_connections
    _sync_max_connections = max_per_client
    reset_connections()


def connection_for(url: str, timeout: float) -> Redis:
    """One shared client per (URL, socket timeout): callers that must not wait long pass a short timeout."""
    key = (url, timeout)
    conn = _connections.get(key)
    if conn is not None:
        return conn
    # Under a lock: a client built twice by racing threads closes its pool when the loser is collected,
    # under whoever still uses it.
    with _connections_lock:
        conn = _connections.get(key)
        if conn is not None:
            return conn
        options = dict(socket_timeout=timeout, socket_connect_timeout=min(timeout, 2.0), health_check_interval=30)
        if _sync_max_connections is None:
            conn = Redis.from_url(url, **options)
        else:
            # A thread waits for a free connection as long as it would wait for an answer, then fails
            # as if Redis did not answer.
            pool = BlockingConnectionPool.from_url(
                url, max_connections=_sync_max_connections, timeout=timeout, **options
            )
            conn = Redis(connection_pool=pool)
        _connections[key] = conn
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


def get_rq_queue_by_name(name: str) -> Queue:
    """The RQ queue of an RQ list name (`database`, `database.high`, ...)."""
    return Queue(name, connection=get_connection(), default_timeout=600)


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


_registered: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def registered_script(conn, source: str):
    """The Lua `source` registered once per client (redis-py's Script keeps the SHA and reloads it after a
    restart): callers on a hot path avoid hashing the source on every call."""
    per_conn = _registered.get(conn)
    if per_conn is None:
        per_conn = _registered[conn] = {}
    script = per_conn.get(source)
    if script is None:
        script = per_conn[source] = conn.register_script(source)
    return script


def script_run(conn: Redis, source: str, *, keys, args):
    """Run a registered script (`registered_script`) as one EVALSHA straight on a pooled connection.

    For the submission's hot path: redis-py's command machinery (argument checks, retry wrapper, response
    callbacks, per-command observability) cost as much CPU as the script itself. What is kept: the pool's
    checkout (which replaces a connection the server closed), a script reloaded after NOSCRIPT (a
    restarted or flushed Redis), the error types callers catch (RedisError, OSError), and redis-py's own
    path while tracing is on (its instrumentation makes the span of each command). Nothing is retried:
    a failed connection is dropped and the caller answers.
    """
    script = registered_script(conn, source)
    if tracing_active():
        return script(keys=keys, args=args, client=conn)
    pool = conn.connection_pool
    connection = pool.get_connection()
    try:
        try:
            connection.send_packed_command([hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))])
            return connection.read_response()
        except NoScriptError:
            connection.send_packed_command([hiredis.pack_command(("EVAL", source, len(keys), *keys, *args))])
            return connection.read_response()
    except (RedisError, OSError) as exc:
        if not isinstance(exc, ResponseError):
            connection.disconnect()
        raise
    finally:
        pool.release(connection)
