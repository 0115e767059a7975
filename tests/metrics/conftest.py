"""Real processes for the metrics tests: workers and scripts against the test database and Redis."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import database_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def multiproc_dir(tmp_path, settings):
    from queues.metrics import prepare_multiprocess_dir

    path = prepare_multiprocess_dir(tmp_path / "prometheus")
    settings.PROMETHEUS_MULTIPROC_DIR = str(path)
    return path


@pytest.fixture
def process_env(redis_server, multiproc_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS")}
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=redis_server.url,
        EXTRA_JOB_MODULES="tests.jobs",
        PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir),
        SECRET_KEY=settings.SECRET_KEY,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        DEBUG="false",
        WORKER_TTL="15",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(*args, env, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def django_script(code: str, *, env) -> str:
    """Run `code` in a separate Django process (as the web process would) and return its stdout."""
    done = manage("shell", "-c", code, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture
def start_worker(process_env, tmp_path):
    """Long-running `manage.py rqworker <queues> --with-scheduler`; stopped (warm) at teardown."""
    procs = []

    def start(*queues, env=None):
        log = open(tmp_path / f"worker-{len(procs)}.log", "w+")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", *queues, "--with-scheduler"],
            cwd=ROOT,
            env=env or process_env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            text=True,
        )
        proc.log = log
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop_worker(proc)


def stop_worker(proc, timeout=20) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.log.seek(0)
    return proc.log.read()


def wait_for(condition, timeout=60.0, interval=0.2, message="condition not reached"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(message)


def parse_metrics(text: str) -> dict:
    """{(sample name, frozenset(labels)): value}"""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, w) in ls for k, w in labels.items()))


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(username="ops", password="pw-ops-12345", is_staff=True)


@pytest.fixture
def staff_client(make_api_client, staff_user):
    return make_api_client(staff_user)
