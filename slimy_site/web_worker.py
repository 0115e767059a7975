"""gunicorn worker for `make run`'s web server: uvicorn (httptools, uvloop) that ends event streams cleanly.

Why uvicorn under gunicorn: gunicorn keeps managing processes as before (restarts, graceful
timeout, `--workers`), and uvicorn is the most used, well-kept ASGI server for it.

On SIGTERM/SIGINT/SIGQUIT uvicorn stops accepting connections and waits for open responses to finish;
an event stream would only finish at `JOB_EVENTS_MAX_SECONDS`. So the signal first tells every open
stream to end after the event it is sending (`: server restarting; reconnect` — EventSource reconnects
with Last-Event-ID to another process), and the worker exits once they have.
"""

from __future__ import annotations

import sys

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker


class _DrainingServer(Server):
    def handle_exit(self, sig, frame) -> None:
        from queues.api.output_watch import output_hubs_drain

        output_hubs_drain()
        super().handle_exit(sig, frame)


class SlimyUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "lifespan": "on", "access_log": False}

    def handle_exit(self, sig, frame) -> None:  # SIGQUIT, installed by UvicornWorker
        from queues.api.output_watch import output_hubs_drain

        output_hubs_drain()
        super().handle_exit(sig, frame)

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = _DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
