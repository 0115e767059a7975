"""What real processes print: people at a terminal get compact tagged lines, anything else JSON lines.

The terminal is a real pseudo-terminal (the `pty` module), so the processes decide as they would on a
laptop; RQ's own INFO chatter (registries, pub/sub, scheduler locks) stays out of both.
"""

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue
from slimy_site.runall import Child, Supervisor
from tests.processes import ROOT, process_env, wait_for
from tests.redis_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RQ_CHATTER = ("cleaning registries", "subscribing to channel", "Acquired scheduler lock", "Listening on")


class Terminal:
    """A command whose stdout and stderr are a pseudo-terminal; everything it printed so far in `text`."""

    def __init__(self, argv, env):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.raw = b""

    def read(self, seconds=0.2) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process is gone and the terminal closed
                    break
                if not chunk:
                    break
                self.raw += chunk
        return self.text

    @property
    def text(self) -> str:
        return self.raw.decode(errors="replace").replace("\r\n", "\n")

    def wait_for(self, needle_or_predicate, timeout):
        check = needle_or_predicate if callable(needle_or_predicate) else (lambda t: needle_or_predicate in t)
        return wait_for(
            lambda: check(ANSI.sub("", self.read())),
            timeout=timeout,
            interval=0,
            message=f"{needle_or_predicate!r} in:\n{self.text[-3000:]}",
        )

    def stop(self, timeout=90):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                self.read(0.2)
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.read(0.2)
        os.close(self.master)


def _env(redis_server, **extra):
    env = process_env(redis_server.url)
    env.pop("LOG_FORMAT")  # unless given, the default (auto) decides
    env.pop("NO_COLOR", None)
    return {**env, **{k: str(v) for k, v in extra.items()}}


def _lines(text):
    return [line for line in ANSI.sub("", text).split("\n") if line.strip()]


def test_a_worker_in_a_terminal_prints_tagged_coloured_lines_without_rqs_chatter(redis_server):
    job = job_enqueue(job_type="test_echo", payload={"value": "tty"})
    failing = job_enqueue(job_type="test_permanent", payload={"tag": "tty"})
    term = Terminal(
        [sys.executable, "manage.py", "rqworker", "database", "--burst", "--with-scheduler"],
        _env(redis_server, SLIMY_PROCESS="worker-database-1"),
    )
    try:
        term.wait_for(lambda t: t.count("job started") == 2 and "job failed" in t, timeout=120)
        assert term.proc.wait(60) == 0
    finally:
        term.stop()
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.COMPLETED
    assert "\x1b[35mworker-database-1" in term.text  # coloured process tag
    lines = _lines(term.text)
    assert not any(line.startswith("{") for line in lines), term.text
    assert not any(chatter in term.text for chatter in RQ_CHATTER), term.text
    completed = next(line for line in lines if "job completed" in line)
    assert re.match(
        r"^\d\d:\d\d:\d\d worker-database-1 INFO  queues\.runner job completed in [\d.]+ s  job=", completed
    ), completed
    assert f"job={str(job.pk)[:8]}" in completed
    failed = next(line for line in lines if "job failed" in line)
    assert " ERROR queues.runner " in failed and f"job={str(failing.pk)[:8]}" in failed


def test_a_worker_writing_to_a_pipe_prints_json_lines_and_no_colour(redis_server):
    job = job_enqueue(job_type="test_echo", payload={"value": "pipe"})
    env = _env(redis_server, SLIMY_PROCESS="worker-database-2")
    done = subprocess.run(
        [sys.executable, "manage.py", "rqworker", "database", "--burst", "--with-scheduler"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    completed = next(line for line in lines if line["message"].startswith("job completed"))
    assert completed["job_id"] == str(job.pk) and completed["job_type"] == "test_echo"
    assert completed["process"] == "worker-database-2" and completed["level"] == "INFO"
    assert not any(line["logger"].startswith("rq") and line["level"] == "INFO" for line in lines)
    assert "\x1b" not in done.stdout + done.stderr


def test_log_format_can_force_json_in_a_terminal_and_rejects_unknown_values(redis_server):
    code = "import logging; logging.getLogger('queues.reconcile').warning('forced %s', 'json')"
    term = Terminal(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        _env(redis_server, LOG_FORMAT="json", SLIMY_PROCESS="reconciler"),
    )
    try:
        term.wait_for("forced json", timeout=60)
        term.proc.wait(60)
    finally:
        term.stop()
    line = json.loads(next(line for line in _lines(term.text) if "forced json" in line))
    assert line["process"] == "reconciler" and line["level"] == "WARNING"

    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=_env(redis_server, LOG_FORMAT="fancy"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "LOG_FORMAT must be one of auto, console, json, text" in done.stderr


def test_the_supervisor_tags_each_child_with_its_name(tmp_path):
    write = "import os, sys; open(sys.argv[1], 'w').write(os.environ['SLIMY_PROCESS'])"
    children = [
        Child(name, [sys.executable, "-c", write, str(tmp_path / name)])
        for name in ("web", "worker-audit-1", "reconciler")
    ]
    supervisor = Supervisor(children, dict(os.environ), log=lambda message: None)
    for child in children:
        supervisor._spawn(child)
    for child in children:
        assert child.proc.wait(30) == 0
    assert {c.name: (tmp_path / c.name).read_text() for c in children} == {
        "web": "web",
        "worker-audit-1": "worker-audit-1",
        "reconciler": "reconciler",
    }


def test_make_run_in_a_terminal_reads_well(redis_server, tmp_path):
    """The first minutes of `make run` as a newcomer sees them: who said what, no JSON, no RQ chatter."""
    port = free_port()
    env = _env(
        redis_server,
        PORT=port,
        CHAT_CONCURRENCY=1,
        DATABASE_CONCURRENCY=1,
        AUDIT_CONCURRENCY=1,
        DATA_DIR=str(tmp_path / "data"),
    )
    term = Terminal([sys.executable, "manage.py", "runall"], env)
    try:
        term.wait_for("started worker-1", timeout=120)  # web + one worker runtime (reconciler inside)

        def ready():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(ready, timeout=120, interval=0.5, message="health/ready")
        job = job_enqueue(job_type="test_echo", payload={"value": "make run"})
        term.wait_for(
            lambda t: "GET /health/ready 200" in t and f"job={str(job.pk)[:8]}" in t and "job completed" in t,
            timeout=120,
        )
    finally:
        term.stop()
    lines = _lines(term.text)
    assert not any(line.startswith("{") for line in lines), term.text
    assert not any(chatter in term.text for chatter in RQ_CHATTER), term.text
    access = next(line for line in lines if "GET /health/ready 200" in line)
    assert re.match(r"^\d\d:\d\d:\d\d web +INFO  slimy\.access GET /health/ready 200 ", access), access
    completed = next(line for line in lines if "job completed" in line)
    assert re.match(r"^\d\d:\d\d:\d\d worker-1 +INFO ", completed), completed
    assert "all processes stopped" in term.text
