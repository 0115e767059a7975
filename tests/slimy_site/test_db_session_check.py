"""The PostgreSQL session check (slimy_site.postgresql): made when a session sat unused for a second or
more, skipped while the session is in steady use; a session broken while idle is replaced unseen."""

import pytest
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper as DjangoWrapper

from slimy_site import postgresql
from slimy_site.postgresql.base import IDLE_CHECK_SECONDS, DatabaseWrapper

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def checks(monkeypatch):
    """Counts Django's session checks (the `SELECT 1` of CONN_HEALTH_CHECKS) made through is_usable."""
    made = []
    original = DjangoWrapper.is_usable

    def counted(self):
        made.append(1)
        return original(self)

    monkeypatch.setattr(DjangoWrapper, "is_usable", counted)
    return made


def _request_cycle():
    connection.close_if_unusable_or_obsolete()  # request_started
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    connection.close_if_unusable_or_obsolete()  # request_finished


def test_the_backend_is_the_one_configured():
    from django.db import connections

    assert isinstance(connections["default"], DatabaseWrapper)
    assert connection.settings_dict["ENGINE"] == postgresql.__name__
    assert connection.settings_dict["CONN_HEALTH_CHECKS"]


def test_a_session_in_steady_use_is_not_checked_before_each_request(checks):
    _request_cycle()
    checks.clear()
    for _ in range(5):
        _request_cycle()
    assert checks == []


def test_a_session_unused_for_a_second_is_checked_and_replaced_when_broken(checks, monkeypatch):
    _request_cycle()
    old_pid = connection.connection.info.backend_pid
    # The server ends the session while it sits unused.
    from django.db import connections

    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [old_pid])
    finally:
        other.close()
    clock = [postgresql.base.time.monotonic()]
    monkeypatch.setattr(postgresql.base.time, "monotonic", lambda: clock[0] + IDLE_CHECK_SECONDS + 0.5)
    checks.clear()
    _request_cycle()  # the check finds it broken: a new session answers, no error reaches the request
    assert checks
    assert connection.connection.info.backend_pid != old_pid


def test_the_bound_cursor_is_kept_for_its_session_and_replaced_with_it():
    def run():
        with connection.bound_cursor() as cursor:
            cursor.execute("SELECT %s::int", [1])
            assert cursor.fetchone() == (1,)
            return cursor.cursor

    first = run()
    assert run() is first and not first.closed  # left open on leaving `with`, for the next statement
    connection.close()
    assert run() is not first  # a new session, a new cursor
