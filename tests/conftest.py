import os

import pytest
from django.conf import settings

import tests.jobs  # noqa: F401  (registers the test job types)
from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _private_redis(redis_server):
    """Point every Redis user (settings, django-rq, subprocesses) at the private server."""
    from queues.connections import reset_connections
    from queues.constants import rq_queue_names

    os.environ["REDIS_URL"] = redis_server.url
    settings.REDIS_URL = redis_server.url
    settings.RQ_QUEUES = {
        name: {"URL": redis_server.url, "DEFAULT_TIMEOUT": 600, "SOCKET_TIMEOUT": 5} for name in rq_queue_names()
    }
    reset_connections()
    yield
    reset_connections()


@pytest.fixture(scope="session", autouse=True)
def _static_root():
    # WhiteNoise warns on every request when STATIC_ROOT is missing (nothing is collected in tests).
    from pathlib import Path

    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def _clean_redis(_private_redis):
    from queues.connections import get_connection

    get_connection().flushdb()
    yield
    # Event streams read through the process's hub (a background loop under WSGI): close it, so no
    # database session of its poller outlives the test database.
    from queues.api.output_watch import output_hubs_close_background

    output_hubs_close_background()


@pytest.fixture(autouse=True)
def _fresh_role_cache():
    # Flushed tables reuse user ids, which the cross-request role and token caches would still know.
    from slimy_site.authentication import token_cache_clear
    from slimy_site.roles import roles_cache_clear

    roles_cache_clear()
    token_cache_clear()
    yield


@pytest.fixture(autouse=True)
def _stop_leftover_processes():
    yield
    from tests.processes import stop_leftover_processes

    stop_leftover_processes()


@pytest.fixture
def redis_conn():
    from queues.connections import get_connection

    return get_connection()


@pytest.fixture
def run_worker():
    """Run jobs through a real RQ worker in this process until the queues are empty."""
    from queues.connections import get_connection
    from queues.constants import QueueName
    from queues.worker import SlimySimpleWorker

    def run(queues=None, *, with_scheduler=True, max_jobs=None):
        worker = SlimySimpleWorker(queues or list(QueueName.values), connection=get_connection())
        worker.work(burst=True, with_scheduler=with_scheduler, max_jobs=max_jobs, logging_level="WARNING")
        return worker

    return run


def _member(django_user_model, username, password):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username=username, password=password)
    user.groups.add(Group.objects.get_or_create(name="member")[0])  # the API needs a role
    return user


@pytest.fixture
def user(django_user_model):
    return _member(django_user_model, "alice", "pw-alice-123")


@pytest.fixture
def other_user(django_user_model):
    return _member(django_user_model, "bob", "pw-bob-123")


@pytest.fixture
def make_api_client():
    """An API client authenticated the way real clients are: `Authorization: Token <key>`."""
    from rest_framework.test import APIClient

    from slimy_site.services import api_token_issue

    def make(user=None):
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=user)}")
        return client

    return make
