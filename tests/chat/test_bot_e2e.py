"""The chat reply in real worker processes (`manage.py rqworker`): the runtime (the default, the reply
a coroutine) and the forking worker, against the fake provider."""

import pytest

from audit.models import AuditLog
from chat.bot import CANCEL_CHECK_CHUNKS
from chat.models import Message
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.output import FLUSH_SECONDS, output_read_all
from queues.services import job_cancel, job_enqueue
from tests.factories.chat import ConversationFactory
from tests.fake_llm import Behaviour
from tests.processes import FORKING, process_env, start_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _env(redis_server, fake_llm):
    return process_env(
        redis_server.url,
        OPENAI_API_KEY=fake_llm.api_key,
        OPENAI_BASE_URL=fake_llm.base_url,
        OPENAI_TIMEOUT=2,
        CHAT_RETRY_BACKOFF=1,
    )


@pytest.fixture
def runtime(tmp_path, redis_server, fake_llm):
    proc = start_worker(tmp_path, _env(redis_server, fake_llm), ["chat", "database", "audit"])
    yield proc
    proc.stop()


@pytest.fixture
def worker(tmp_path, redis_server, fake_llm):
    proc = start_worker(tmp_path, _env(redis_server, fake_llm), ["chat", "audit"], worker_class=FORKING)
    yield proc
    proc.stop()


def _status(job):
    return JobRecord.objects.get(pk=job.pk).status


def test_forking_worker_retries_then_streams_the_reply(fake_llm, user, worker):
    # Spaced wider than the output log's coalescing window: one entry per token.
    fake_llm.then(
        Behaviour(status=503), Behaviour(chunks=["from", " a", " work-horse"], delay_per_chunk=FLUSH_SECONDS + 0.03)
    )
    job = job_enqueue(job_type="chat_bot_interaction", payload={"prompt": "hi"}, owner=user)
    wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=30, message="completion")
    record = JobRecord.objects.get(pk=job.pk)
    assert record.result["reply"] == "from a work-horse" and record.result["usedFallback"] is False
    assert [a.outcome for a in record.attempt_history.all()] == ["retried", "completed"]
    chunks = [e["text"] for e in output_read_all(job_id=job.pk) if e["type"] == "chunk" and e["attempt"] == 2]
    assert "".join(chunks) == "from a work-horse" and 1 <= len(chunks) <= 3


def test_cancel_stops_a_reply_streaming_in_a_work_horse(fake_llm, user, worker):
    fake_llm.then(Behaviour(chunks=[f"w{n} " for n in range(30)], hold_after=2))
    job = job_enqueue(job_type="chat_bot_interaction", payload={"prompt": "long"}, owner=user)
    assert fake_llm.holding.wait(30), worker.output()
    job_cancel(job=JobRecord.objects.get(pk=job.pk))
    fake_llm.release()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.CANCELLED
    # The horse is stopped: the attempt is closed as cancelled and no reply is ever recorded.
    wait_for(
        lambda: not JobRecord.objects.get(pk=job.pk).attempt_history.filter(outcome="running").exists(),
        timeout=10,
        message="attempt closed",
    )
    assert JobRecord.objects.get(pk=job.pk).result is None
    assert len([e for e in output_read_all(job_id=job.pk) if e["type"] == "chunk"]) <= 2 + CANCEL_CHECK_CHUNKS


def test_runtime_streams_a_reply_coalesced_and_saves_it(fake_llm, user, runtime):
    conversation = ConversationFactory(owner=user)
    fake_llm.then(Behaviour(chunks=[f"t{n} " for n in range(40)]))
    job = job_enqueue(
        job_type="chat_bot_interaction", payload={"prompt": "hi", "conversationId": str(conversation.pk)}, owner=user
    )
    wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=30, message=f"completion\n{runtime.output()}")
    record = JobRecord.objects.get(pk=job.pk)
    reply = "".join(f"t{n} " for n in range(40))
    assert record.result["reply"] == reply
    chunks = [e["text"] for e in output_read_all(job_id=job.pk) if e["type"] == "chunk"]
    assert "".join(chunks) == reply and len(chunks) < 40  # coalesced, not one entry per token
    assert list(
        Message.objects.filter(conversation=conversation).order_by("created_at", "id").values_list("role", flat=True)
    ) == ["user", "assistant"]


def test_runtime_cancel_stops_an_async_reply_mid_stream(fake_llm, user, runtime):
    fake_llm.then(Behaviour(chunks=[f"w{n} " for n in range(30)], hold_after=2))
    job = job_enqueue(job_type="chat_bot_interaction", payload={"prompt": "long"}, owner=user)
    assert fake_llm.holding.wait(30), runtime.output()
    job_cancel(job=JobRecord.objects.get(pk=job.pk))
    # The stream is still held by the provider: only the runtime's fence watcher can stop the reply.
    wait_for(
        lambda: not JobRecord.objects.get(pk=job.pk).attempt_history.filter(outcome="running").exists(),
        timeout=10,
        message="attempt closed",
    )
    fake_llm.release()
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.CANCELLED and record.result is None
    assert [a.outcome for a in record.attempt_history.all()] == ["cancelled"]
    assert not AuditLog.objects.filter(action="chat_bot_interaction", resource_id=str(job.pk)).exists()


def test_cancel_then_retry_while_attempt_1_streams_records_only_attempt_2(fake_llm, user, runtime, redis_server):
    """Issue 15 item 2 on the real reply: no reply saved by attempt 1, no second interaction audit."""
    from queues.services import job_retry

    conversation = ConversationFactory(owner=user)
    fake_llm.then(
        Behaviour(chunks=["first ", "attempt ", "reply"], hold_after=1), Behaviour(chunks=["second ", "attempt"])
    )
    job = job_enqueue(
        job_type="chat_bot_interaction", payload={"prompt": "q", "conversationId": str(conversation.pk)}, owner=user
    )
    assert fake_llm.holding.wait(30), runtime.output()
    job_cancel(job=JobRecord.objects.get(pk=job.pk))
    job_retry(job=JobRecord.objects.get(pk=job.pk))
    try:
        wait_for(lambda: _status(job) == JobStatus.COMPLETED, timeout=30, message="attempt 2 completes")
    except AssertionError as exc:  # once in CI (cause not found yet): keep the worker's account of it
        raise AssertionError(f"{exc}; status {_status(job)}; worker output:\n{runtime.output()[-4000:]}") from None
    fake_llm.release()  # attempt 1's provider goes on, too late
    wait_for(
        lambda: AuditLog.objects.filter(action="chat_bot_interaction", resource_id=str(job.pk)).exists(),
        timeout=30,
        message="the audit event of attempt 2",
    )
    import time

    time.sleep(1.5)
    record = JobRecord.objects.get(pk=job.pk)
    assert record.result["reply"] == "second attempt"
    assert list(
        Message.objects.filter(conversation=conversation, role="assistant").values_list("content", flat=True)
    ) == ["second attempt"]
    events = AuditLog.objects.filter(action="chat_bot_interaction", resource_id=str(job.pk))
    assert [e.details["attempt"] for e in events] == [record.attempts]
