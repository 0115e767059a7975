"""The chat reply in the production worker (`manage.py rqworker`, forking) against the fake provider."""

import pytest

from chat.bot import CANCEL_CHECK_CHUNKS
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.output import output_read_all
from queues.services import job_cancel, job_enqueue
from tests.fake_llm import Behaviour
from tests.processes import process_env, start_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path, redis_server, fake_llm):
    env = process_env(redis_server.url, OPENAI_API_KEY=fake_llm.api_key, OPENAI_BASE_URL=fake_llm.base_url,
                      OPENAI_TIMEOUT=2, CHAT_RETRY_BACKOFF=1)
    proc = start_worker(tmp_path, env, ["chat", "audit"])
    yield proc
    proc.stop()


def _status(job):
    return JobRecord.objects.get(pk=job.pk).status


def test_forking_worker_retries_then_streams_the_reply(fake_llm, user, worker):
    fake_llm.then(Behaviour(status=503), Behaviour(chunks=["from", " a", " work-horse"]))
    job = job_enqueue(job_type="chat_bot_interaction", payload={"prompt": "hi"}, owner=user)
    wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=30, message="completion")
    record = JobRecord.objects.get(pk=job.pk)
    assert record.result["reply"] == "from a work-horse" and record.result["usedFallback"] is False
    assert [a.outcome for a in record.attempt_history.all()] == ["retried", "completed"]
    chunks = [e["text"] for e in output_read_all(job_id=job.pk) if e["type"] == "chunk" and e["attempt"] == 2]
    assert chunks == ["from", " a", " work-horse"]


def test_cancel_stops_a_reply_streaming_in_a_work_horse(fake_llm, user, worker):
    fake_llm.then(Behaviour(chunks=[f"w{n} " for n in range(30)], hold_after=2))
    job = job_enqueue(job_type="chat_bot_interaction", payload={"prompt": "long"}, owner=user)
    assert fake_llm.holding.wait(30), worker.output()
    job_cancel(job=JobRecord.objects.get(pk=job.pk))
    fake_llm.release()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.CANCELLED
    # The horse is stopped: the attempt is closed as cancelled and no reply is ever recorded.
    wait_for(lambda: not JobRecord.objects.get(pk=job.pk).attempt_history.filter(outcome="running").exists(),
             timeout=10, message="attempt closed")
    assert JobRecord.objects.get(pk=job.pk).result is None
    assert len([e for e in output_read_all(job_id=job.pk) if e["type"] == "chunk"]) <= 2 + CANCEL_CHECK_CHUNKS
