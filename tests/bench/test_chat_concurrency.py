"""chat-concurrency never hangs: a round that cannot finish within its bound is stopped and reported."""

import pytest

from bench.harness import ROOT, BenchEnv
from bench.llm_server import ProviderProcess
from bench.scenarios.chat_concurrency import THREADED, _verdict, chat_round
from tests.processes import database_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_round_past_its_bound_is_stopped_and_reported(tmp_path, redis_server):
    import bench.jobs  # noqa: F401  (the warm-up job type, in this process too)

    env = BenchEnv(
        database_url=database_url(), redis_url=redis_server.url, out_dir=tmp_path, smoke=True, log_dir=tmp_path
    )
    # Replies take 60 s; the round may take 1 s after submission.
    provider = ProviderProcess(chunks=2, reply_seconds=60, cwd=ROOT, log_path=tmp_path / "provider.log")
    try:
        data = chat_round(
            env,
            provider,
            worker_class=THREADED,
            level=2,
            timeout=1.0,
            WORKER_THREADS=2,
            OPENAI_API_KEY=provider.api_key,
            OPENAI_BASE_URL=provider.base_url,
        )
    finally:
        provider.stop()
    assert data["finished"] is False
    assert data["correct"] == 0 and data["problem_count"] == 2
    assert _verdict(data).startswith("did not finish: 0/2 correct")
    assert data["free_connections_before"] > 2
    assert data["jobs_per_s"] == 0.0 and data["cpu_ms_per_reply"] == 0.0
