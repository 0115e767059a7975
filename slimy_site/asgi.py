"""The web application `make run` serves: requests on a thread pool, event streams on the event loop.

Every request runs through Django's WSGI handler on a fixed pool of `WEB_THREADS` threads: middleware,
authentication, throttling and views run exactly as under gunicorn's gthread workers, and each thread
keeps its database and Redis connections from request to request. (Django's own ASGI handler would run
each request on a new thread with a new database session, and the synchronous middleware would make
every view wait on one anyway.)

The bridge to the threads is ours, built for one hop per request: the event loop reads a small body
before the request goes to a thread, and the thread hands back the whole answer (status, headers,
body) when it returns. (a2wsgi, used before, sent every message of the answer through the loop and
waited for each: three or more round trips per request, each waiting behind whatever the loop was
doing.) A streaming response other than an event stream still goes out part by part as it is made.

An event stream (queues.api.output) takes its thread only to check the request; it then hands its
stream over (`STREAM_HANDOFF` in the ASGI scope) and this application sends the events from the event
loop while it listens for the client's disconnect: an open stream costs a coroutine, not a thread.
"""

import asyncio
import contextvars
import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "slimy_site.settings")

# A body up to this size is read on the event loop before its request goes to a thread (one hop);
# the rest of a bigger one is read from the thread as Django asks for it.
BODY_PRELOAD_BYTES = 256 * 1024
GC_YOUNG_THRESHOLD = 50_000


def build_application():
    import django as django_package
    from django.core.wsgi import get_wsgi_application

    django_package.setup(set_prefix=False)
    # Before the handler loads its middleware: Django's instrumentation adds one (a no-op unless configured).
    from slimy_site.tracing import tracing_setup

    tracing_setup(role="web")
    django = get_wsgi_application()
    from django.conf import settings

    from queues.api.output import STREAM_HANDOFF, StreamHandoff
    from queues.connections import connections_bound

    threads = ThreadPoolExecutor(max_workers=settings.WEB_THREADS, thread_name_prefix="slimy-web")
    # The request threads share a few Redis connections per client (two clients: the usual timeout and
    # the short one of pings and stream slots) beside the stream hub's three.
    connections_bound(settings.WEB_REDIS_CONNECTIONS)

    async def application(scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        loop = asyncio.get_running_loop()
        # The view of an event stream leaves its stream here instead of returning it as the body.
        handoff = scope[STREAM_HANDOFF] = StreamHandoff(loop)
        body = await _Body.preload(loop, receive)
        environ = _environ(scope, body)
        context = contextvars.copy_context()  # a request's context variables stay with it
        try:
            answer = await loop.run_in_executor(threads, context.run, _call, django, environ, handoff, loop, send)
        except BaseException:
            if handoff.stream is not None:
                await handoff.stream.aclose()  # its slot, at least, is given back
            raise
        if answer.streamed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if handoff.stream is not None:
            if answer.status == 200:
                await send({"type": "http.response.start", "status": 200, "headers": answer.headers})
                await _serve_stream(handoff.stream, receive, send)
                return
            await handoff.stream.aclose()  # a middleware answered something else: the stream never starts
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
        await send({"type": "http.response.body", "body": b"".join(answer.chunks), "more_body": False})

    return application


class _Answer:
    __slots__ = ("chunks", "headers", "status", "streamed")

    def __init__(self):
        self.status, self.headers, self.chunks, self.streamed = 500, [], [], False


def _call(app, environ, handoff, loop, send) -> _Answer:
    """On a pool thread: run the WSGI application and collect its answer for the event loop to send."""
    answer = _Answer()

    def start_response(status, headers, exc_info=None):
        if exc_info is not None and answer.streamed:
            raise exc_info[1].with_traceback(exc_info[2])
        answer.status = int(status.split(" ", 1)[0])
        answer.headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        return answer.chunks.append  # WSGI's write()

    iterable = app(environ, start_response)
    try:
        if getattr(iterable, "streaming", False) and handoff.stream is None:
            # A streaming body (not an event stream): each part goes out as it is made.
            def post(message):
                asyncio.run_coroutine_threadsafe(send(message), loop).result()

            answer.streamed = True
            post({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
            for chunk in answer.chunks:  # written through write() before the iterable
                post({"type": "http.response.body", "body": chunk, "more_body": True})
            answer.chunks = []
            for chunk in iterable:
                if chunk:
                    post({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            answer.chunks.extend(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()  # Django's request_finished (connection housekeeping) runs here, on this thread
    return answer


class _Body:
    """`wsgi.input`: what the loop read before the request went to its thread, then the rest on demand."""

    def __init__(self, loop, receive, buffered: bytearray, more: bool):
        self._loop, self._receive, self._buffer, self._more = loop, receive, buffered, more

    @classmethod
    async def preload(cls, loop, receive) -> "_Body":
        buffered, more = bytearray(), True
        while more and len(buffered) < BODY_PRELOAD_BYTES:
            message = await receive()
            buffered += message.get("body", b"")
            more = message.get("more_body", False)
        return cls(loop, receive, buffered, more)

    def _fill(self) -> None:
        message = asyncio.run_coroutine_threadsafe(self._receive(), self._loop).result()
        self._buffer += message.get("body", b"")
        self._more = message.get("more_body", False)

    def read(self, size: int = -1) -> bytes:
        while self._more and (size is None or size < 0 or len(self._buffer) < size):
            self._fill()
        if size is None or size < 0 or size >= len(self._buffer):
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        return data

    def readline(self, size: int = -1) -> bytes:
        while True:
            limit = size if size is not None and size >= 0 else None
            end = self._buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self.read(end + 1)
            if not self._more or (limit is not None and len(self._buffer) >= limit):
                return self.read(size)
            self._fill()

    def __iter__(self):
        while line := self.readline():
            yield line


def _environ(scope, body: _Body) -> dict:
    script_name = scope.get("root_path", "").encode("utf8").decode("latin1")
    path_info = scope["path"].encode("utf8").decode("latin1")
    if script_name and path_info.startswith(script_name):
        path_info = path_info[len(script_name) :]
    server = scope.get("server") or ("localhost", 80)
    environ = {
        "asgi.scope": scope,  # queues.api.output finds the stream handoff here
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": scope["query_string"].decode("ascii"),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1] or 0),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    client = scope.get("client")
    if client is not None:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for name, value in scope.get("headers", ()):
        name = name.decode("latin1")
        if name == "content-length":
            key = "CONTENT_LENGTH"
        elif name == "content-type":
            key = "CONTENT_TYPE"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        value = value.decode("latin1")
        if key in environ:
            value = environ[key] + "," + value
        environ[key] = value
    return environ


async def _serve_stream(stream, receive, send):
    """Send the stream's events until it ends or the client goes away (noticed at once, not at a write)."""
    events = aiter(stream)

    async def pump():
        async for text in events:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def disconnect():
        while (await receive())["type"] != "http.disconnect":
            pass

    sending, listening = asyncio.ensure_future(pump()), asyncio.ensure_future(disconnect())
    try:
        await asyncio.wait([sending, listening], return_when=asyncio.FIRST_COMPLETED)
    finally:
        client_gone = listening.done() and not listening.cancelled() and not sending.done()
        for task in (sending, listening):
            task.cancel()
        await asyncio.gather(sending, listening, return_exceptions=True)
        await events.aclose()  # the stream stops watching its job now, wherever it was
        await stream.aclose(client_gone=client_gone)


async def _lifespan(receive, send):
    # The stream hub starts with the first stream; streams themselves are ended by slimy_site.web_worker,
    # which hears the signal before connections are drained. Here, after them, the hub sends its last
    # slot releases and closes its connections.
    from queues.api.output_watch import output_hub_close

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # What is loaded by now (Django, the URL conf, the middleware) lives as long as the process:
            # the collector's full passes need not walk it again and again while a thousand streams run.
            gc.collect()
            gc.freeze()
            # Collections of the youngest objects every 50,000 allocations instead of 700: with a thousand
            # streams open, the default made the collector run (and stop the loop) many times a second,
            # and promoted so much to the oldest generation that full passes of 150-300 ms followed
            # (measured under `bench watchers`). Middle passes follow every 20 young ones, full passes every 10
            # middle ones (and only once the old generation grew by a quarter), so cyclic garbage is still freed.
            gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await output_hub_close()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = build_application()
