"""chat-concurrency: N simultaneous chat replies in ONE worker process, each streamed over 5 s.

The provider stand-in (tests/fake_llm.py, in a process of its own: bench.llm_server) streams every
reply as `chunks` deltas spread over `reply_seconds`. At each level N, N `chat_bot_interaction` jobs,
each in a conversation of its own (so the reply is saved as a message), are written in bulk and
pushed with `job_push` to ONE idle worker process that already ran a job (warm).

Figure: the DEFAULT worker command, `manage.py rqworker chat` with no `--worker-class`, with
CHAT_CONCURRENCY=N: whatever runtime that command runs. Baseline, same level, same run:
`--worker-class queues.threadworker.SlimyThreadWorker` with WORKER_THREADS=N (a thread and a database
session per reply). A round that has not finished `timeout` s after submission is stopped and reported
as such (figures from what completed, `note` says "did not finish"): it never hangs the bench.

Per round: wall time (first record created → last job finished, ledger clocks), jobs/s (correct
replies / wall time), peak PostgreSQL sessions of the worker (pg_stat_activity rows with the worker's
application_name, set through `?application_name=` in its DATABASE_URL, or from one of its TCP client
ports: bench.probes), peak PSS of the worker and its children (/proc/<pid>/smaps_rollup), worker CPU
per reply (user+system of the tree, children included, from submission to the end / completed jobs),
and correctness: a job counts only if it completed, did not fall back, and both its result and the
assistant message saved in its conversation hold the full reply.

Note: the thread-worker baseline holds up to N sessions at once; at N=1,000 run it against a
PostgreSQL whose max_connections leaves room (or expect it to report refused connections).
"""

from __future__ import annotations

import time

from bench import harness
from bench.harness import ROOT, BenchEnv, Result
from bench.ledger import ledger_clear, ledger_jobs_prepare
from bench.probes import SessionCounter, TreeSampler, tree_cpu_seconds, with_application_name

NAME = "chat-concurrency"
DEFAULTS = dict(levels=(50, 200, 1000), reply_seconds=5.0, chunks=20, timeout=120.0)
SMOKE = dict(levels=(2, 6), reply_seconds=0.5, chunks=5, timeout=60.0)
DEFAULT_WORKER = "rqworker chat (default command)"
THREADED = "queues.threadworker.SlimyThreadWorker"
BASELINE = "SlimyThreadWorker, WORKER_THREADS = level"


def run(env: BenchEnv, *, levels, reply_seconds: float, chunks: int, timeout: float, **_) -> Result:
    from bench.llm_server import ProviderProcess

    provider = ProviderProcess(
        chunks=chunks, reply_seconds=reply_seconds, cwd=ROOT, log_path=env.log_dir / "provider.log"
    )
    result = Result(
        NAME,
        env,
        params=dict(
            levels=list(levels),
            reply_seconds=reply_seconds,
            chunks=chunks,
            timeout_s=timeout,
            processes=1,
            baseline=THREADED,
        ),
    )
    llm_env = dict(OPENAI_API_KEY=provider.api_key, OPENAI_BASE_URL=provider.base_url, LOG_LEVEL="WARNING")
    try:
        for level in levels:
            # Every reply is the one bench user's (one tenant): its fair-dequeue cap is lifted to the level,
            # this scenario measures one process's concurrency (`fairness` measures the cap).
            ours = chat_round(
                env,
                provider,
                worker_class=None,
                level=level,
                timeout=timeout,
                CHAT_CONCURRENCY=level,
                CHAT_TENANT_CONCURRENCY=level,
                **llm_env,
            )
            base = chat_round(
                env,
                provider,
                worker_class=THREADED,
                level=level,
                timeout=timeout,
                CHAT_CONCURRENCY=level,
                CHAT_TENANT_CONCURRENCY=level,
                WORKER_THREADS=level,
                **llm_env,
            )
            result.details[str(level)] = {"default": ours, "baseline": base}
            note = f"{_verdict(ours)}; baseline {_verdict(base)}"
            for label, key, unit, higher in (
                ("jobs/s", "jobs_per_s", "jobs/s", True),
                ("wall time", "wall_s", "s", False),
                ("peak PostgreSQL sessions", "peak_sessions", "sessions", False),
                ("PostgreSQL sessions opened", "sessions_opened", "sessions", False),
                ("peak PSS", "peak_pss_mb", "MB", False),
                ("CPU per reply", "cpu_ms_per_reply", "ms", False),
            ):
                result.add(
                    f"{label} at {level}", ours[key], unit, BASELINE, base[key], higher_is_better=higher, note=note
                )
    finally:
        provider.stop()
    return result


def _verdict(round_: dict) -> str:
    if round_["finished"]:
        verdict = f"{round_['correct']}/{round_['jobs']} correct"
    else:
        verdict = (
            f"did not finish: {round_['correct']}/{round_['jobs']} correct after {round_['wall_s']:g} s"
            f" (bound {round_['timeout_s']:g} s)"
        )
    if round_["jobs"] >= round_["free_connections_before"]:
        verdict += f", PostgreSQL had {round_['free_connections_before']} free connections"
    return verdict


def _free_connections() -> int:
    """max_connections less the sessions open now (the thread baseline needs one per job in flight)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('max_connections')::int - count(*) FROM pg_stat_activity")
        return cursor.fetchone()[0]


def _owner():
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get_or_create(username="bench-chat")[0]


def chat_round(env: BenchEnv, provider, *, worker_class: str | None, level: int, timeout: float, **worker_env) -> dict:
    from chat.models import Conversation

    conn = env.redis()
    conn.flushdb()
    ledger_clear()
    owner = _owner()
    Conversation.objects.filter(owner=owner).delete()
    tag = "default" if worker_class is None else worker_class.rsplit(".", 1)[1]
    name = f"chat-{tag}-{level}"
    app_name = f"slimy-bench-{name}"[:63]
    database_url = with_application_name(env.database_url, app_name)
    if worker_class is None:
        proc = harness.default_worker(env, ["chat"], name=name, DATABASE_URL=database_url, **worker_env)
    else:
        proc = harness.slimy_worker(
            env, ["chat"], worker_class, name=name, burst=False, DATABASE_URL=database_url, **worker_env
        )
    sampler = None
    free_connections = _free_connections()
    try:
        harness.worker_warm(env, proc, job_type="bench_noop_chat")
        sampler = TreeSampler(proc.pid, sessions=SessionCounter(env.database_url, app_name, proc.pid)).start()
        cpu_before = tree_cpu_seconds(proc.pid)
        submitted = time.monotonic()
        ids = _submit(owner, level)
        outcome = _wait(ids, submitted + timeout, proc)
        cpu = tree_cpu_seconds(proc.pid) - cpu_before
        elapsed = time.monotonic() - submitted
    finally:
        if sampler is not None:
            sampler.stop()
            sampler.sessions.close()
        proc.stop()
    correct, problems = _check(ids, provider.text)
    data = {
        "worker": worker_class or "default",
        "jobs": level,
        "timeout_s": timeout,
        "finished": outcome["finished"],
        "correct": correct,
        "problems": problems[:5],
        "problem_count": len(problems),
        "wall_s": round(outcome["wall_s"] if outcome["finished"] else elapsed, 3),
        "peak_sessions": sampler.peak_sessions,
        "sessions_opened": sampler.sessions_opened,
        "peak_pss_mb": round(sampler.peak_pss_mb, 1),
        "cpu_s": round(cpu, 3),
        "samples": sampler.samples,
        "free_connections_before": free_connections,
        "log": str(proc.log_path),
    }
    data["jobs_per_s"] = round(correct / data["wall_s"], 3) if data["wall_s"] else 0.0
    data["cpu_ms_per_reply"] = round(cpu * 1000 / correct, 3) if correct else 0.0
    return data


def _submit(owner, level: int) -> list[str]:
    from chat.models import Conversation

    conversations = Conversation.objects.bulk_create(
        [Conversation(owner=owner, title=f"bench {i}") for i in range(level)]
    )
    payloads = [{"prompt": f"hello {i}", "conversationId": str(c.pk)} for i, c in enumerate(conversations)]
    return ledger_jobs_prepare(job_type="chat_bot_interaction", count=level, payloads=payloads, owner=owner)


def _wait(ids, deadline: float, proc) -> dict:
    """Poll the ledger until every job is completed or failed, or until `deadline` (monotonic)."""
    from django.db.models import Max, Min

    from queues.constants import JobStatus
    from queues.models import JobRecord

    final = [JobStatus.COMPLETED, JobStatus.FAILED]
    while time.monotonic() < deadline:
        if JobRecord.objects.filter(pk__in=ids, status__in=final).count() == len(ids):
            window = JobRecord.objects.filter(pk__in=ids).aggregate(first=Min("created_at"), last=Max("finished_at"))
            return {"finished": True, "wall_s": (window["last"] - window["first"]).total_seconds()}
        if proc.popen.poll() is not None:
            break  # the worker died: what completed is all there is
        time.sleep(0.1)
    return {"finished": False, "wall_s": None}


def _check(ids, text: str) -> tuple[int, list[str]]:
    """(jobs whose full reply was returned and saved, descriptions of the others)."""
    from chat.bot import reply_job_id
    from chat.models import Message, MessageRole
    from queues.constants import JobStatus
    from queues.models import JobRecord

    saved = dict(
        Message.objects.filter(job_id__in=[reply_job_id(i) for i in ids], role=MessageRole.ASSISTANT).values_list(
            "job_id", "content"
        )
    )
    correct, problems = 0, []
    for record in JobRecord.objects.filter(pk__in=ids):
        result = record.result or {}
        if record.status != JobStatus.COMPLETED:
            problems.append(f"{record.pk}: {record.status} {record.error_code} {record.error_message[:200]}")
        elif result.get("usedFallback") or result.get("reply") != text:
            problems.append(
                f"{record.pk}: reply {result.get('reply')!r:.80} (fallback: {result.get('fallbackReason')})"
            )
        elif saved.get(reply_job_id(record.pk)) != text:
            problems.append(f"{record.pk}: saved reply {saved.get(reply_job_id(record.pk))!r:.80}")
        else:
            correct += 1
    return correct, problems
