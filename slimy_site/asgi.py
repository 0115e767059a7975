"""The web application `make run` serves: event streams on the event loop, everything else on threads.

Routes whose view sets `serves_streams` (the job event streams) go to Django's ASGI handler: an open
stream is a coroutine, so a thousand of them cost no thread. Every other route goes to Django's WSGI
handler on a fixed pool of `WEB_THREADS` threads (a2wsgi): the synchronous views run exactly as under
gunicorn's gthread workers, each thread keeping its database connection from request to request
(under Django's ASGI handler each request would run on a new thread and open a new connection).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "slimy_site.settings")


def build_application():
    from a2wsgi import WSGIMiddleware
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.urls import Resolver404, resolve

    streams = get_asgi_application()  # sets Django up
    threads = WSGIMiddleware(get_wsgi_application(), workers=settings.WEB_THREADS)

    def serves_streams(path: str) -> bool:
        try:
            match = resolve(path)
        except Resolver404:
            return False
        return getattr(getattr(match.func, "view_class", None), "serves_streams", False)

    async def application(scope, receive, send):
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http" and serves_streams(scope["path"]):
            await streams(scope, receive, send)
        else:
            await threads(scope, receive, send)

    return application


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
