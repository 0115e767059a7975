"""The web application `make run` serves: requests on a thread pool, event streams on the event loop.

Every request runs through Django's WSGI handler on a fixed pool of `WEB_THREADS` threads (a2wsgi):
middleware, authentication, throttling and views run exactly as under gunicorn's gthread workers, and
each thread keeps its database and Redis connections from request to request. (Django's own ASGI
handler would run each request on a new thread with a new database session, and the synchronous
middleware would make every view wait on one anyway.)

An event stream (queues.api.output) takes its thread only to check the request; it then hands its
stream over (`STREAM_HANDOFF` in the ASGI scope) and this application sends the events from the event
loop while it listens for the client's disconnect: an open stream costs a coroutine, not a thread.
"""

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "slimy_site.settings")


def build_application():
    from a2wsgi import WSGIMiddleware
    from django.core.wsgi import get_wsgi_application

    import django as django_package

    django_package.setup(set_prefix=False)
    # Before the handler loads its middleware: Django's instrumentation adds one (a no-op unless configured).
    from slimy_site.tracing import tracing_setup

    tracing_setup(role="web")
    django = get_wsgi_application()
    from django.conf import settings

    from queues.api.output import STREAM_HANDOFF, StreamHandoff

    # Django's WSGIHandler is a WSGI callable; a2wsgi's annotation spells the protocol more narrowly.
    threads = WSGIMiddleware(django, workers=settings.WEB_THREADS)  # type: ignore[arg-type]

    async def application(scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        # The view of an event stream leaves its stream here instead of returning it as the body.
        handoff = scope[STREAM_HANDOFF] = StreamHandoff(asyncio.get_running_loop())

        status = []

        async def send_until_handoff(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif not message.get("more_body") and handoff.stream is not None and status == [200]:
                return  # the body goes on: the stream follows
            await send(message)

        try:
            await threads(scope, receive, send_until_handoff)
        except BaseException:
            if handoff.stream is not None:
                await handoff.stream.aclose()  # its slot, at least, is given back
            raise
        if handoff.stream is not None:
            if status == [200]:
                await _serve_stream(handoff.stream, receive, send)
            else:  # a middleware answered something else: the stream never starts
                await handoff.stream.aclose()

    return application


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
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await output_hub_close()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = build_application()
