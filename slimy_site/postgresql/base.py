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
from typing import Any

import psycopg
from django.db.backends.postgresql import base, operations
from psycopg import postgres
from psycopg.pq import Format

IDLE_CHECK_SECONDS = 1.0
_TIMESTAMPTZ_OID = postgres.types["timestamptz"].oid
_TIMESTAMPTZ_LOADER = psycopg.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor, sql, params):
        # A statement of bound_cursor() (bound on the server, prepared) leaves no client-side query text:
        # the query log shows it with its values composed in, as Django's own statements appear.
        text = super().last_executed_query(cursor, sql, params)
        if text is None and params is not None:
            try:
                return self.compose_sql(sql, params)
            except (TypeError, ValueError):
                return None
        return text


class _KeptCursor(psycopg.Cursor):
    """bound_cursor()'s cursor, kept for its session: closing it after a statement (as Django's cursor
    wrapper does on leaving `with`) leaves it open for the next; it goes with its session."""

    def close(self) -> None:
        pass


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
    _slimy_last_housekeeping: float | None = None
    _slimy_bound_cursor: _KeptCursor | None = None

    def close_if_unusable_or_obsolete(self) -> None:
        # Called at each request's start and end (and by the workers between jobs): the time between two
        # calls at a request's start is how long the session sat unused.
        super().close_if_unusable_or_obsolete()
        now = time.monotonic()
        last, self._slimy_last_housekeeping = self._slimy_last_housekeeping, now
        if self.connection is not None and last is not None and now - last < IDLE_CHECK_SECONDS:
            self.health_check_done = True

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if (
            connection.prepare_threshold is None
            and self.settings_dict["OPTIONS"].get("server_side_binding") is not True
        ):
            # Statements run through bound_cursor() are prepared on their first run; Django's own cursors bind
            # on the client and never prepare, whatever the threshold.
            connection.prepare_threshold = 0
        return connection

    def bound_cursor(self):
        """A cursor that binds its parameters on the server and prepares its statement once per session,
        wrapped as Django wraps its own (errors, the query log), for one statement run on every request
        (the ledger INSERT of a submission): PostgreSQL parses and plans it once per session, and psycopg
        sends the values without quoting them into the SQL. Behind a pooler in transaction mode, the
        pooler must keep prepared statements per client (PgBouncer 1.21+: max_prepared_statements)."""
        # What BaseDatabaseWrapper._cursor() does first: a session found broken is replaced, not used.
        self.close_if_health_check_failed()
        self.ensure_connection()
        cursor: Any = self._slimy_bound_cursor  # (django-stubs type make_cursor's argument as a wrapper)
        if cursor is None or cursor.connection is not self.connection:
            # One per session, kept: psycopg keeps a cursor's adapters for the statement it ran last, so
            # the next run of the same statement dumps its values without looking each type up again
            # (and without building a cursor).
            with self.wrap_database_errors:
                cursor = self._slimy_bound_cursor = _KeptCursor(self.connection)
            # Timestamps read with psycopg's C loader: Django's connection registers a pure-Python one
            # (a tenth of a worker's CPU on no-op jobs, whose batch statements return them).
            cursor.adapters.register_loader(_TIMESTAMPTZ_OID, _TIMESTAMPTZ_LOADER)
        # What BaseDatabaseWrapper.cursor() does with the cursor it creates.
        self.validate_thread_sharing()
        return self.make_debug_cursor(cursor) if self.queries_logged else self.make_cursor(cursor)
