"""The web application `make run` serves: requests on a thread pool, event streams on the event loop.

Every request runs through Django's WSGI handler on a fixed pool of `WEB_THREADS` threads (a2wsgi):
middleware, authentication, throttling and views run exactly as under gunicorn's gthread workers, and
each thread keeps its database and Redis connections from request to request. (Django's own ASGI
handler would run each request on a new thread with a new database session, and the synchronous
middleware would make every view wait on one anyway.)

An event stream (queues.output_apis) takes its thread only to check the request; it then hands its
stream over (`STREAM_HANDOFF` in the ASGI scope) and this application sends the events from the event
loop while it listens for the client's disconnect: an open stream costs a coroutine, not a thread.
"""

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "slimy_site.settings")


def build_application():
    from a2wsgi import WSGIMiddleware
    from django.core.wsgi import get_wsgi_application

    django = get_wsgi_application()  # sets Django up: imports below need it
    from django.conf import settings

    from queues.output_apis import STREAM_HANDOFF, StreamHandoff

    threads = WSGIMiddleware(django, workers=settings.WEB_THREADS)

    async def application(scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        # The view of an event stream leaves its stream here instead of returning it as the body.
        handoff = scope[STREAM_HANDOFF] = StreamHandoff(asyncio.get_running_loop())

        async def send_until_handoff(message):
            if message["type"] == "http.response.body" and not message.get("more_body") and handoff.stream:
                return  # the body goes on: the stream follows
            await send(message)

        await threads(scope, receive, send_until_handoff)
        if handoff.stream is not None:
            await _serve_stream(handoff.stream, receive, send)

    return application


async def _serve_stream(stream, receive, send):
    """Send the stream's events until it ends or the client goes away (noticed at once, not at a write)."""
    async def pump():
        async for text in stream:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def disconnect():
        while (await receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(disconnect())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stream.aclose()


async def _lifespan(receive, send):
    # Nothing to start or stop: the stream hub starts with the first stream (graceful shutdown of
    # streams is slimy_site.web_worker's, which hears the signal before connections are drained).
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


application = build_application()
