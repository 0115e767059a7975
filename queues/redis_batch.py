"""Many coroutines' small Redis commands in one round trip: a stand-in for an event loop's asyncio client.

A thousand chat replies in one process each ask Redis a few small things (their tenant's quota, the
circuit breaker, a charge afterwards). Sent one by one they queue for the loop's few connections
(queues.connections bounds them) and cost a round trip each. Through `BatchedRedis`, the plain
commands issued by the loop's coroutines within FLUSH_DELAY go out in ONE pipeline, and each caller
gets its own answer, or its own error. A caller's `pipeline()` is a group of commands sent inside that
shared pipeline (in order, back to back, but not as a MULTI transaction: only for groups that need no
isolation, such as INCRBY then EXPIRE of one key). Everything else (scripts, blocking commands) goes to
the client itself.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from typing import Any

# How long a command waits for others to share its round trip.
FLUSH_DELAY = 0.002
COALESCED = frozenset({"get", "set", "delete", "exists", "incrby", "expire"})

Command = tuple[str, tuple, dict]


class BatchedRedis:
    def __init__(self, client):
        self.client = client
        self._pending: list[tuple[list[Command], asyncio.Future]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task] = set()

    def __getattr__(self, name: str) -> Any:
        if name in COALESCED:
            return functools.partial(self._one, name)
        return getattr(self.client, name)

    async def _one(self, name: str, *args, **kwargs):
        (answer,) = await self.submit([(name, args, kwargs)])
        return answer

    def pipeline(self, transaction: bool = True) -> _Group:
        """A group of commands sent together with the others' (see the module's note on `transaction`)."""
        return _Group(self)

    def submit(self, commands: list[Command]) -> asyncio.Future:
        """A future of the commands' answers, in order (an error answer fails the future)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((commands, future))
        if self._handle is None:
            self._handle = loop.call_later(FLUSH_DELAY, self._flush, loop)
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        batch, self._pending = self._pending, []
        if batch:
            task = loop.create_task(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[list[Command], asyncio.Future]]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for commands, _ in batch:
                    for name, args, kwargs in commands:
                        getattr(pipe, name)(*args, **kwargs)
                answers = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # noqa: BLE001 - the round trip failed: every caller gets its error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for commands, future in batch:
            mine, start = answers[start : start + len(commands)], start + len(commands)
            if future.done():  # its caller was cancelled meanwhile
                continue
            error = next((answer for answer in mine if isinstance(answer, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)


class _Group:
    """`BatchedRedis.pipeline()`: commands queued here are sent with everyone else's at `execute()`."""

    def __init__(self, batched: BatchedRedis):
        self._batched = batched
        self._commands: list[Command] = []

    def __getattr__(self, name: str) -> Any:
        if name not in COALESCED:
            raise AttributeError(f"{name} is not batched; use the client itself")

        def queue(*args, **kwargs) -> _Group:
            self._commands.append((name, args, kwargs))
            return self

        return queue

    async def execute(self) -> list:
        commands, self._commands = self._commands, []
        return await self._batched.submit(commands) if commands else []

    async def __aenter__(self) -> _Group:
        return self

    async def __aexit__(self, *exc_info) -> None:
        self._commands = []


_batched: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BatchedRedis] = weakref.WeakKeyDictionary()


def get_async_batched_connection() -> BatchedRedis:
    """The running loop's BatchedRedis over its client (queues.connections.get_async_connection)."""
    from queues.connections import get_async_connection

    loop = asyncio.get_running_loop()
    client = get_async_connection()
    batched = _batched.get(loop)
    if batched is None or batched.client is not client:  # the loop's client was reset (tests)
        batched = _batched[loop] = BatchedRedis(client)
    return batched
