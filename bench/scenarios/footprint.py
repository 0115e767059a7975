"""footprint: what `make run` costs at idle, processes and memory, on its defaults.

Starts `manage.py runall` (the supervisor behind `make run`) with the bench's private Redis and
database and nothing else set (CHAT/DATABASE/AUDIT_CONCURRENCY, worker classes... all defaults),
waits until GET /health/ready answers 200, lets it idle `idle` s, then counts the processes of its
tree (the supervisor included, Redis excluded: it is the bench's, outside the tree anyway) and sums
their PSS (/proc/<pid>/smaps_rollup: shared pages counted once across the tree).

Baseline: the least any deployment of Slimy can run, one web process as `make run` starts it
(gunicorn gthread with the same options, `--workers 1`: its master plus one worker, the Django app
loaded), measured the same way after the same idle time. The ratio says how many "bare web servers"
the whole laptop system weighs.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import harness
from bench.harness import BenchEnv, Result
from bench.probes import tree_cpu_seconds, tree_processes, tree_pss_bytes

NAME = "footprint"
DEFAULTS = dict(idle=10.0, ready_timeout=300.0, overrides=None)
# Smoke checks the machinery, not the figure: one slot per queue keeps it to a few processes.
SMOKE = dict(
    idle=1.0, ready_timeout=300.0, overrides={"CHAT_CONCURRENCY": 1, "DATABASE_CONCURRENCY": 1, "AUDIT_CONCURRENCY": 1}
)
BASELINE = "one web process (gunicorn gthread, 1 worker)"


def _not_redis(proc) -> bool:
    return proc.name().startswith("redis-server")


def run(env: BenchEnv, *, idle: float, ready_timeout: float, overrides: dict | None, **_) -> Result:
    overrides = overrides or {}
    result = Result(
        NAME,
        env,
        params=dict(
            idle_s=idle, command="manage.py runall (make run)", settings=overrides or "defaults", baseline=BASELINE
        ),
    )
    from bench.ledger import ledger_clear

    data_dir = Path(tempfile.mkdtemp(prefix="footprint-", dir=env.log_dir))
    env.redis().flushdb()
    ledger_clear()  # idle means idle: no queued records for the reconciler to push
    port = harness.free_port()
    system = _measure(
        env,
        [sys.executable, "manage.py", "runall", "--port", str(port)],
        "runall",
        port,
        idle,
        ready_timeout,
        DATA_DIR=str(data_dir / "runall"),
        **overrides,
    )
    port = harness.free_port()
    web = _measure(
        env,
        harness.gthread_argv(port),
        "web",
        port,
        idle,
        ready_timeout,
        DATA_DIR=str(data_dir / "web"),
    )
    result.details = {"make run": system, "web": web}
    result.add(
        "make run processes (Redis excluded)",
        system["processes"],
        "processes",
        BASELINE,
        web["processes"],
        higher_is_better=False,
    )
    result.add("make run PSS at idle", system["pss_mb"], "MB", BASELINE, web["pss_mb"], higher_is_better=False)
    return result


def _measure(
    env: BenchEnv, argv: list[str], name: str, port: int, idle: float, ready_timeout: float, **extra_env
) -> dict:
    proc = harness.start(env, argv, f"footprint-{name}", LOG_LEVEL="WARNING", **extra_env)
    try:

        def ready():
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.popen.returncode}; see {proc.log_path}")
            return _status(port, "/health/ready") == 200

        harness.wait_until(ready, ready_timeout, f"{name} to be ready (see {proc.log_path})", interval=0.5)
        # Ready means web + database + Redis: workers may still be importing Django. Idle counts from
        # when the tree has settled (same process count, under 5% of a core, for 2 s in a row).
        harness.wait_until(_settled(proc.pid), ready_timeout, f"{name} to settle", interval=0.1)
        time.sleep(idle)
        processes = tree_processes(proc.pid, exclude=_not_redis)
        pss = tree_pss_bytes(proc.pid, exclude=_not_redis)
        names = sorted(" ".join(p.cmdline()[1:4]) for p in processes if p.is_running())
    finally:
        proc.stop(timeout=60)
    return {"processes": len(processes), "pss_mb": round(pss / 2**20, 1), "commands": names, "log": str(proc.log_path)}


def _settled(pid: int, window: float = 2.0):
    state = {"since": time.monotonic(), "count": -1, "cpu": tree_cpu_seconds(pid), "at": time.monotonic()}

    def check() -> bool:
        time.sleep(0.5)
        now, cpu, count = time.monotonic(), tree_cpu_seconds(pid), len(tree_processes(pid))
        busy = (cpu - state["cpu"]) / max(now - state["at"], 1e-3) > 0.05
        if busy or count != state["count"]:
            state["since"] = now
        state.update(cpu=cpu, at=now, count=count)
        return now - state["since"] >= window

    return check


def _status(port: int, path: str) -> int:
    # A generous timeout: two dozen processes importing Django at once on a small machine answer late,
    # and a probe abandoned early still occupies a server thread.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0
