"""The instruments the scenarios read: PSS and CPU of process trees, PostgreSQL sessions, job windows.

Real processes, the real PostgreSQL and the private Redis; nothing timed.
"""

import subprocess
import sys
import textwrap

import psutil
import psycopg
import pytest

from bench.competitors import WINDOW_KEY, JobWindow, window_read
from bench.probes import SessionCounter, TreeSampler, pss_bytes, tree_cpu_seconds, tree_pss_bytes, with_application_name
from tests.processes import database_url, wait_for

MB = 2**20


def _spawn_tree(child_code: str) -> subprocess.Popen:
    """A parent process (python) that starts `child_code` in a child, prints its pid and waits."""
    parent = textwrap.dedent(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", {child_code!r}], stdout=subprocess.PIPE)
        print(child.pid, child.stdout.readline().decode().strip(), flush=True)
        child.wait()
        print("child done", flush=True)
        sys.stdin.read()
    """)
    return subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def _end(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(10)


def test_tree_pss_includes_children():
    tree = _spawn_tree(
        "import sys, time\nblock = bytearray(80 * 2**20)\nfor i in range(0, len(block), 4096): block[i] = 1\n"
        "print('ready', flush=True)\ntime.sleep(60)"
    )
    try:
        child_pid, state = tree.stdout.readline().decode().split()
        assert state == "ready"
        assert pss_bytes(int(child_pid)) > 80 * MB
        assert pss_bytes(tree.pid) < 80 * MB  # the parent alone does not hold the block...
        assert tree_pss_bytes(tree.pid) > pss_bytes(tree.pid) + 80 * MB  # ...its tree does
        sampler = TreeSampler(tree.pid).start()
        sampler.stop()
        assert sampler.peak_pss_mb > 80
    finally:
        for proc in psutil.Process(tree.pid).children(recursive=True):
            proc.kill()
        _end(tree)


def test_tree_cpu_counts_children_that_exited():
    tree = _spawn_tree("import time\nwhile time.process_time() < 0.5: pass\nprint('ready', flush=True)")
    try:
        assert tree.stdout.readline().decode().split()[1] == "ready"
        assert tree.stdout.readline().decode().strip() == "child done"
        # The child is gone: its CPU is counted through the parent that reaped it.
        assert tree_cpu_seconds(tree.pid) >= 0.5
    finally:
        _end(tree)


def test_gone_process_has_no_pss_nor_cpu():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    assert pss_bytes(proc.pid) == 0 and tree_pss_bytes(proc.pid) == 0 and tree_cpu_seconds(proc.pid) == 0


def test_with_application_name_sets_or_replaces_it():
    url = with_application_name("postgres://root@db:5432/x?sslmode=disable&application_name=old", "slimy-w1")
    assert url == "postgres://root@db:5432/x?sslmode=disable&application_name=slimy-w1"
    assert with_application_name("postgres://root@db/x", "a b").endswith("/x?application_name=a+b")


@pytest.mark.django_db
def test_session_counter_matches_application_name_and_client_ports():
    url = database_url()
    # Two sessions of the test process under the tag: matched by application_name.
    tagged = [psycopg.connect(url, application_name="slimy-bench-probe-test") for _ in range(2)]
    # One session of another process, no tag: matched through its client port.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, psycopg
        conn = psycopg.connect({url!r})
        print("ready", flush=True)
        sys.stdin.read()
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    counter = SessionCounter(url, "slimy-bench-probe-test", child.pid)
    try:
        assert child.stdout.readline().strip() == b"ready"
        assert len(counter.client_ports()) == 1
        assert counter.count() == 3
        for conn in tagged:
            conn.close()
        assert wait_for(lambda: counter.count() == 1, 10, "tagged sessions to end")
        assert len(counter.seen) == 3  # every session ever observed
    finally:
        counter.close()
        _end(child)
        for conn in tagged:
            conn.close()


def test_job_windows_of_several_processes_add_up(redis_conn):
    published = {}
    first = JobWindow(lambda value: published.__setitem__("a", value))
    second = JobWindow(lambda value: published.__setitem__("b", value))
    for window, jobs in ((first, 3), (second, 2)):
        for _ in range(jobs):
            window.started()
            window.finished()
    assert window_read(redis_conn) == (0, 0.0, 0.0)
    # The publishing threads write what they saw; stand in for Redis with what they published.
    wait_for(
        lambda: published.get("a", "").endswith(" 3") and published.get("b", "").endswith(" 2"),
        10,
        "both windows to publish",
    )
    redis_conn.hset(WINDOW_KEY, mapping=published)
    done, start, end = window_read(redis_conn)
    assert done == 5
    assert start == min(first.first, second.first) and end == max(first.last, second.last) and start <= end
