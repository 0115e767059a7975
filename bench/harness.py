"""What every scenario shares: the bench database, a private Redis, worker processes, results.

A scenario gets a `BenchEnv` (database URL, private Redis URL, output directory, smoke flag) and
returns a `Result`; `Result.write()` prints the table, writes `<out>/<scenario>.json` and appends
one line to `<out>/README.md`. Every figure carries the baseline measured in the same run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import ratio
from tests.processes import Proc

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


class BenchSetupError(Exception):
    """The bench cannot run as asked (a missing optional dependency, ...): the command says so and stops."""


@dataclass
class BenchEnv:
    database_url: str
    redis_url: str
    out_dir: Path = RESULTS_DIR
    smoke: bool = False
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="slimy-bench-")))

    def process_env(self, **extra) -> dict:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            EXTRA_JOB_MODULES="bench.jobs",
            PYTHONUNBUFFERED="1",
            LOG_FORMAT="json",
        )
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def redis(self):
        from redis import Redis

        return Redis.from_url(self.redis_url, socket_timeout=30)


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline_value: float
    higher_is_better: bool = True
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "value": round(self.value, 3),
            "unit": self.unit,
            "baseline": {"name": self.baseline_name, "value": round(self.baseline_value, 3)},
            "ratio": ratio(self.value, self.baseline_value),
            "higher_is_better": self.higher_is_better,
            "note": self.note,
        }


@dataclass
class Result:
    scenario: str
    env: BenchEnv
    params: dict
    figures: list[Figure] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def add(self, *args, **kwargs) -> Figure:
        figure = Figure(*args, **kwargs)
        self.figures.append(figure)
        return figure

    def as_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "smoke": self.env.smoke,
            "started_at": dt.datetime.fromtimestamp(self.started, dt.UTC).isoformat(),
            "duration_s": round(time.time() - self.started, 2),
            "machine": machine_info(),
            "params": self.params,
            "figures": [f.as_dict() for f in self.figures],
            "details": self.details,
        }

    def table(self) -> str:
        rows = [("figure", "value", "baseline", "baseline value", "ratio")]
        for f in self.figures:
            r = ratio(f.value, f.baseline_value)
            rows.append(
                (
                    f.name,
                    f"{f.value:,.2f} {f.unit}",
                    f.baseline_name,
                    f"{f.baseline_value:,.2f} {f.unit}",
                    f"{r:.2f}x" if r is not None else "-",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return f"== {self.scenario}{' (smoke)' if self.env.smoke else ''}\n" + "\n".join(lines)

    def write(self, stdout=sys.stdout) -> dict:
        data = self.as_dict()
        self.env.out_dir.mkdir(parents=True, exist_ok=True)
        (self.env.out_dir / f"{self.scenario}.json").write_text(json.dumps(data, indent=2) + "\n")
        summary = "; ".join(
            f"{f['name']} {f['value']:g} {f['unit']} vs {f['baseline']['name']} {f['baseline']['value']:g}"
            f" ({f['ratio']}x)"
            for f in data["figures"]
        )
        readme = self.env.out_dir / "README.md"
        if not readme.exists():
            readme.write_text("# Benchmark runs (one line per run, newest last)\n\n")
        with readme.open("a") as fh:
            fh.write(
                f"- {data['started_at'][:19]}Z `{self.scenario}`{' smoke' if self.env.smoke else ''}"
                f" @{data['machine'].get('commit', '?')}: {summary}\n"
            )
        stdout.write(self.table() + "\n")
        return data


def machine_info() -> dict:
    info = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        import rq

        info["rq"] = rq.__version__ if hasattr(rq, "__version__") else rq.VERSION
    except ImportError:
        pass
    try:
        info["commit"] = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or "?"
        )
    except (OSError, subprocess.SubprocessError):
        info["commit"] = "?"
    return info


def start(env: BenchEnv, argv: list[str], name: str, **extra_env) -> Proc:
    return Proc(argv, env.process_env(**extra_env), env.log_dir / f"{name}.log")


def slimy_worker(
    env: BenchEnv, queues, worker_class: str, *, name: str, burst: bool, scheduler: bool = False, **extra_env
) -> Proc:
    argv = [sys.executable, "manage.py", "rqworker", *queues, "--worker-class", worker_class, "--name", name]
    if burst:
        argv.append("--burst")
    if scheduler:
        argv.append("--with-scheduler")
    return start(env, argv, name, **extra_env)


def default_worker(env: BenchEnv, queues, *, name: str, **extra_env) -> Proc:
    """`manage.py rqworker <queues>` exactly as a user types it (no --worker-class, no --burst): it
    measures whatever runtime the command runs by default. Callers wait for their jobs, then stop it."""
    argv = [sys.executable, "manage.py", "rqworker", *queues, "--name", name]
    return start(env, argv, name, **extra_env)


def worker_warm(env: BenchEnv, proc: Proc, *, job_type: str, timeout: float = 120) -> None:
    """Wait until the worker has run one `job_type` job (submitted with `job_enqueue`): it is up,
    connected and consuming that job's queue, whatever runtime it is. Works for every worker kind."""
    from queues.constants import JobStatus
    from queues.models import JobRecord
    from queues.services import job_enqueue

    record = job_enqueue(job_type=job_type, payload={})

    def done():
        if proc.popen.poll() is not None:
            raise RuntimeError(f"worker exited with {proc.popen.returncode}; see {proc.log_path}")
        return JobRecord.objects.filter(pk=record.pk, status=JobStatus.COMPLETED).exists()

    wait_until(done, timeout, f"the worker to run a {job_type} job (see {proc.log_path})", interval=0.05)


def rq_worker(env: BenchEnv, queues, *, name: str, burst: bool, fork: bool = False, django: bool = False) -> Proc:
    argv = [sys.executable, "-m", "bench.rq_worker", "--url", env.redis_url]
    if django:
        argv.append("--django")
    for queue in queues:
        argv += ["--queue", queue]
    if burst:
        argv.append("--burst")
    if fork:
        argv.append("--fork")
    return start(env, argv, name)


def wait_until(predicate, timeout: float, message: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {message}")
        time.sleep(interval)


def check_results_structure(data: dict) -> None:
    """Raise AssertionError unless `data` has the structure every scenario writes (used by smoke tests)."""
    for key in ("scenario", "smoke", "started_at", "duration_s", "machine", "params", "figures", "details"):
        assert key in data, f"missing {key}"
    assert data["figures"], "no figures"
    for figure in data["figures"]:
        assert figure["value"] > 0 and figure["baseline"]["value"] > 0, figure
        assert figure["ratio"] is not None and figure["ratio"] > 0, figure


def gthread_argv(port: int, *, processes: int = 1, threads: int = 8) -> list[str]:
    """The baseline web server of the scenarios: gunicorn's threaded worker serving the WSGI app."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "slimy_site.wsgi",
        "--worker-class",
        "gthread",
        "--workers",
        str(processes),
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",
    ]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
