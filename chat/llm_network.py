"""The provider client's network layer on plain asyncio (a protocol and its transport), instead of anyio.

The `openai` SDK's HTTP client (httpx2 over httpcore2) reads and writes through anyio on asyncio: every
read of a streamed reply opens an anyio cancel scope for its timeout (`fail_after`: the current task,
a scope object, a timer, a context manager or two). With a thousand replies streaming at once that is
a large part of a reply's CPU. This backend does the same reads and writes straight on the loop: data
arrives in the protocol's buffer, a read takes it (or waits for it on one future, with one timer for its
timeout). The HTTP protocol, connection pooling and TLS handshakes stay httpcore's and the loop's.

Errors map to httpcore's, as its own backends do: a timeout to ReadTimeout / WriteTimeout /
ConnectTimeout, a failed socket to ReadError / WriteError / ConnectError.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

# Reading pauses while this much is buffered and not yet read (a reply's events are far smaller).
HIGH_WATER = 256 * 1024


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None  # a read waiting for data
        self.drain: asyncio.Future | None = None  # a write waiting for the buffer to drain
        self.paused_writing = False
        self.paused_reading = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused_reading and self.transport is not None:
            self.paused_reading = True
            self.transport.pause_reading()
        self._wake(self.waiter)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake(self.waiter)
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake(self.waiter)
        self._wake(self.drain)

    def pause_writing(self) -> None:
        self.paused_writing = True

    def resume_writing(self) -> None:
        self.paused_writing = False
        self._wake(self.drain)

    @staticmethod
    def _wake(future: asyncio.Future | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)


async def _wait(future: asyncio.Future, timeout: float | None) -> bool:
    """Wait for `future`; False if `timeout` passed first."""
    if timeout is None:
        await future
        return True
    loop = asyncio.get_running_loop()
    timer = loop.call_later(timeout, _expire, future)
    try:
        await future
    finally:
        timer.cancel()
    return future.result() is None


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(False)  # the wait timed out


class AsyncioStream(httpcore2.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol):
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer:
            if protocol.eof:
                return self._end(httpcore2.ReadError)
            protocol.waiter = asyncio.get_running_loop().create_future()
            try:
                if not await _wait(protocol.waiter, timeout):
                    raise httpcore2.ReadTimeout("timed out")
            finally:
                protocol.waiter = None
            if not protocol.buffer:
                return self._end(httpcore2.ReadError)
        data = bytes(protocol.buffer[:max_bytes])
        del protocol.buffer[:max_bytes]
        if protocol.paused_reading and len(protocol.buffer) < HIGH_WATER // 4:
            protocol.paused_reading = False
            self._transport.resume_reading()
        return data

    def _end(self, error: type[Exception]) -> bytes:
        """At the end of the stream: b"" after a clean close, the error after a failed one."""
        if self._protocol.error is not None:
            raise error(str(self._protocol.error)) from self._protocol.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if self._transport.is_closing():
            raise httpcore2.WriteError(str(protocol.error or "connection closed"))
        self._transport.write(buffer)
        if protocol.paused_writing:
            protocol.drain = asyncio.get_running_loop().create_future()
            try:
                if not await _wait(protocol.drain, timeout):
                    raise httpcore2.WriteTimeout("timed out")
            finally:
                protocol.drain = None
            if protocol.error is not None:
                raise httpcore2.WriteError(str(protocol.error)) from protocol.error

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.close()
            raise httpcore2.ConnectTimeout("TLS handshake timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore2.ConnectError(str(exc)) from exc
        if transport is None:
            raise httpcore2.ConnectError("the connection closed during the TLS handshake")
        return AsyncioStream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle kept-alive connection with data or an end waiting was closed (or broken) by the server.
            return bool(self._protocol.buffer) or self._protocol.eof or self._transport.is_closing()
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(
                    _Protocol, host, port, local_addr=(local_address, 0) if local_address else None
                )
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout("connection timed out") from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout("connection timed out") from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


_ssl_context: ssl.SSLContext | None = None


def _shared_ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's roots), built once per process: each build loads the roots."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx2.create_ssl_context()
    return _ssl_context


class AsyncioTransport(httpx2.AsyncHTTPTransport):
    """httpx's own transport (its request and error mapping) over a connection pool using AsyncioBackend.

    httpx's transport takes no network backend: its pool (`_pool`, a private attribute of
    httpx2.AsyncHTTPTransport, the one used here) is replaced by the same pool built with this backend.
    No proxy (a proxied transport builds another kind of pool); TLS with httpx's default context.
    """

    def __init__(self, *, limits: httpx2.Limits):
        super().__init__(limits=limits, verify=_shared_ssl_context())
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=_shared_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )
