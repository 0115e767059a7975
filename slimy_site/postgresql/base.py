"""Django's PostgreSQL backend, with the session check (CONN_HEALTH_CHECKS) made only after idle.

Django's check costs a `SELECT 1` round trip before the first query of every request: under load it
was a sixth of a submission's wall time, to catch a session that broke while it sat unused. Here a
session is checked only when it was left unused for IDLE_CHECK_SECONDS or more (a web thread between
requests, a worker between jobs): a session in steady use goes on without the round trip.

What that leaves: a session that breaks within a second of its last use (PostgreSQL restarted under
load) fails the one query that finds it broken — `503 database_unavailable` in the API, as a query
made while the server goes down already does — and Django replaces it at the end of that request
(`errors_occurred`), so the thread's next request gets a new session.
"""

from __future__ import annotations

import time

from django.db.backends.postgresql import base

IDLE_CHECK_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    _slimy_last_housekeeping: float | None = None

    def close_if_unusable_or_obsolete(self) -> None:
        # Called at each request's start and end (and by the workers between jobs): the time between two
        # calls at a request's start is how long the session sat unused.
        super().close_if_unusable_or_obsolete()
        now = time.monotonic()
        last, self._slimy_last_housekeeping = self._slimy_last_housekeeping, now
        if self.connection is not None and last is not None and now - last < IDLE_CHECK_SECONDS:
            self.health_check_done = True
