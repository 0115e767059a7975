"""Cancelling a chat reply: queued or while it streams; the event stream ends `cancelled`."""

import threading

import pytest
from django.db import connection

from chat.bot import CANCEL_CHECK_CHUNKS
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.output import FLUSH_SECONDS, output_read_all
from queues.services import job_enqueue
from tests.chat.sse import events_of, only
from tests.fake_llm import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

CHUNKS = [f"word{n} " for n in range(40)]


def _ask(user, prompt="a long story please"):
    return job_enqueue(job_type="chat_bot_interaction", payload={"prompt": prompt}, owner=user)


def test_cancel_while_streaming_stops_the_reply(fake_llm, user, make_api_client, run_worker):
    # Spaced wider than the output log's coalescing window: one entry per token.
    fake_llm.then(Behaviour(chunks=CHUNKS, hold_after=3, delay_per_chunk=FLUSH_SECONDS + 0.03))
    job = _ask(user)
    client = make_api_client(user)
    outcome = {}

    def cancel_when_streaming():
        try:
            assert fake_llm.holding.wait(20), "the reply never started"
            outcome["response"] = client.post(f"/api/jobs/{job.pk}/cancel")
        finally:
            fake_llm.release()
            connection.close()  # this thread's own database session

    canceller = threading.Thread(target=cancel_when_streaming)
    canceller.start()
    run_worker()
    canceller.join(20)

    assert outcome["response"].status_code == 200
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.CANCELLED and record.result is None
    assert [a.outcome for a in record.attempt_history.all()] == ["cancelled"]
    chunks = [e["text"] for e in output_read_all(job_id=job.pk) if e["type"] == "chunk"]
    # Three tokens before the cancel; after it, the reply stops within one check (≤ 16 tokens), not at 40.
    # (Tokens arriving within the output log's coalescing window may share an entry.)
    text = "".join(chunks)
    assert text.startswith("".join(CHUNKS[:3]))
    assert len(text.split()) <= 3 + CANCEL_CHECK_CHUNKS < len(CHUNKS)
    events = events_of(client.get(f"/api/jobs/{job.pk}/events"))
    assert only(events, "state")[-1].data["status"] == "cancelled"
    assert len(only(events, "chunk")) == len(chunks)
    # The chat status endpoint agrees, and nothing was answered.
    status = client.get(f"/api/chat/jobs/{job.pk}").json()
    assert status["status"] == "cancelled" and "result" not in status and status["cancelledAt"]


def test_cancel_a_queued_reply(fake_llm, user, make_api_client, run_worker):
    job = _ask(user)
    client = make_api_client(user)
    assert client.post(f"/api/jobs/{job.pk}/cancel").status_code == 200
    run_worker()
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.CANCELLED
    assert fake_llm.requests == []
    events = events_of(client.get(f"/api/jobs/{job.pk}/events"))
    assert [e.data["status"] for e in only(events, "state")] == ["cancelled"]


def test_someone_else_cannot_cancel(fake_llm, user, other_user, make_api_client):
    job = _ask(user)
    response = make_api_client(other_user).post(f"/api/jobs/{job.pk}/cancel")
    assert response.status_code == 404 and response.json()["error"] == "job_not_found"
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.QUEUED
