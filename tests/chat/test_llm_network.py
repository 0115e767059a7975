"""The provider client's asyncio network backend (chat.llm_network) on real sockets: plain and TLS
connections through httpcore's pool, the end of a stream, and its errors mapped to httpcore's."""

from __future__ import annotations

import asyncio
import ssl
import subprocess

import httpcore2
import pytest
import uvloop

from chat.llm_network import AsyncioBackend, AsyncioStream

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(coro_fn, loop_name: str):
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        return runner.run(coro_fn())


async def _http_server(handler_body: bytes, *, ssl_context=None, chunks: int = 3):
    """A tiny HTTP/1.1 server answering every request with `chunks` chunked pieces of `handler_body`."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n")
                for _ in range(chunks):
                    writer.write(b"%x\r\n%s\r\n" % (len(handler_body), handler_body))
                    await writer.drain()
                    await asyncio.sleep(0.01)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(server context, client context trusting it) for a self-signed `localhost` certificate."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


@pytest.mark.parametrize("loop_name", LOOPS)
def test_requests_through_the_pool_read_every_chunk_and_reuse_the_connection(loop_name):
    async def scenario():
        server, port = await _http_server(b"hello ")
        try:
            async with httpcore2.AsyncConnectionPool(network_backend=AsyncioBackend()) as pool:
                bodies = []
                for _ in range(2):
                    response = await pool.request("GET", f"http://127.0.0.1:{port}/")
                    bodies.append((response.status, response.content))
                return bodies, len(pool.connections)
        finally:
            server.close()

    bodies, connections = run(scenario, loop_name)
    assert bodies == [(200, b"hello " * 3)] * 2
    assert connections == 1  # kept alive and reused


@pytest.mark.parametrize("loop_name", LOOPS)
def test_https_goes_through_the_tls_handshake(tls, loop_name):
    server_context, client_context = tls

    async def scenario():
        server, port = await _http_server(b"secret ", ssl_context=server_context)
        try:
            async with httpcore2.AsyncConnectionPool(
                ssl_context=client_context, network_backend=AsyncioBackend()
            ) as pool:
                response = await pool.request("GET", f"https://localhost:{port}/")
                return response.status, response.content
        finally:
            server.close()

    assert run(scenario, loop_name) == (200, b"secret " * 3)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_certificate_not_trusted_is_a_connect_error(tls, loop_name):
    server_context, _ = tls

    async def scenario():
        server, port = await _http_server(b"x", ssl_context=server_context)
        try:
            async with httpcore2.AsyncConnectionPool(
                ssl_context=ssl.create_default_context(), network_backend=AsyncioBackend()
            ) as pool:
                await pool.request("GET", f"https://localhost:{port}/")
        finally:
            server.close()

    with pytest.raises(httpcore2.ConnectError):
        run(scenario, loop_name)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_refused_connection_is_a_connect_error(loop_name):
    async def scenario():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)

    with pytest.raises(httpcore2.ConnectError):
        run(scenario, loop_name)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_read_times_out_then_reads_what_comes_and_the_end(loop_name):
    async def scenario():
        peers: list[asyncio.StreamWriter] = []

        async def handle(reader, writer):
            peers.append(writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        assert isinstance(stream, AsyncioStream)
        try:
            with pytest.raises(httpcore2.ReadTimeout):
                await stream.read(1024, timeout=0.05)
            while not peers:
                await asyncio.sleep(0.01)
            peers[0].write(b"late data")
            first = await stream.read(4, timeout=5)
            rest = await stream.read(1024, timeout=5)
            readable_before = stream.get_extra_info("is_readable")
            peers[0].close()
            end = await stream.read(1024, timeout=5)
            return first, rest, readable_before, end, stream.get_extra_info("is_readable")
        finally:
            await stream.aclose()
            server.close()

    first, rest, readable_before, end, readable_after = run(scenario, loop_name)
    assert (first, rest, end) == (b"late", b" data", b"")
    assert readable_before is False and readable_after is True  # a closed idle connection is not reused
