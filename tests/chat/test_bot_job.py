"""The chat_bot_interaction job through a real worker against the fake provider: replies, retries, fallback."""

import pytest

from chat.bot import FALLBACK_REPLIES
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.output import output_read_all, output_text
from queues.services import job_enqueue
from slimy_site.exceptions import ValidationFailed
from tests.fake_llm import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def _ask(user, prompt="What is a slime mold?", **payload):
    return job_enqueue(job_type="chat_bot_interaction", payload={"prompt": prompt, **payload}, owner=user)


def test_reply_completes_with_text_usage_and_output_log(fake_llm, user, drain, metric):
    prompt_before = metric("slimy_llm_tokens_total", kind="prompt")
    completion_before = metric("slimy_llm_tokens_total", kind="completion")
    fake_llm.then(Behaviour(chunks=["A slime", " mold is", " a protist."], prompt_tokens=21))
    record = drain(_ask(user))
    assert record.status == JobStatus.COMPLETED
    assert record.result == {
        "reply": "A slime mold is a protist.",
        "usedFallback": False,
        "model": "gpt-4o-mini",
        "usage": {"promptTokens": 21, "completionTokens": 3},
    }
    assert record.attempts == 1
    entries = output_read_all(job_id=record.pk)
    # One segment, then the text in order; tokens arriving within FLUSH_SECONDS share one entry.
    assert entries[0]["type"] == "segment" and all(e["type"] == "chunk" for e in entries[1:])
    assert "".join(e["text"] for e in entries[1:]) == "A slime mold is a protist."
    assert 1 <= len(entries) - 1 <= 3
    assert metric("slimy_llm_tokens_total", kind="prompt") - prompt_before == 21
    assert metric("slimy_llm_tokens_total", kind="completion") - completion_before == 3


def test_the_prompt_reaches_the_provider_with_personality_and_guild(fake_llm, user, drain):
    drain(_ask(user, "  tell me a joke  ", guildId="123456789", personalityMode="casual"))
    [request] = fake_llm.completion_requests
    system, question = request.body["messages"]
    assert system["role"] == "system" and "laid-back" in system["content"] and "123456789" in system["content"]
    assert question == {"role": "user", "content": "tell me a joke"}  # trimmed


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x" * 2001}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "hi", "personalityMode": "grumpy"}, "personalityMode"),
        ({"prompt": "hi", "conversationId": "not-a-uuid"}, "conversationId"),
        ({"prompt": "hi", "temperature": 2}, "temperature"),
    ],
)
def test_invalid_payload_is_refused_at_enqueue(user, payload, field):
    with pytest.raises(ValidationFailed) as err:
        job_enqueue(job_type="chat_bot_interaction", payload=payload, owner=user)
    assert field in err.value.details
    assert not JobRecord.objects.exists()


def test_a_2000_character_prompt_is_accepted(fake_llm, user, drain):
    record = drain(_ask(user, "y" * 2000))
    assert record.status == JobStatus.COMPLETED
    assert fake_llm.completion_requests[0].body["messages"][-1]["content"] == "y" * 2000


def test_server_error_is_retried_then_succeeds(fake_llm, user, drain):
    fake_llm.then(Behaviour(status=500), Behaviour(text="second time lucky"))
    record = drain(_ask(user))
    assert record.status == JobStatus.COMPLETED
    assert record.result["reply"] == "second time lucky" and record.result["usedFallback"] is False
    assert [a.outcome for a in record.attempt_history.all()] == ["retried", "completed"]
    assert len(fake_llm.completion_requests) == 2
    # The output log keeps both attempts, each in its own segment; the latest one is the reply.
    segments = [e for e in output_read_all(job_id=record.pk) if e["type"] == "segment"]
    assert [(s["attempt"], s["label"]) for s in segments] == [(1, "attempt"), (2, "attempt")]
    assert output_text(job_id=record.pk) == "second time lucky"


def test_rate_limit_retry_waits_for_retry_after(fake_llm, user, drain, run_worker):
    fake_llm.then(Behaviour(status=429, retry_after="3"), Behaviour(text="ok now"))
    job = _ask(user)
    run_worker(max_jobs=1)
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.RETRYING
    # The job's backoff alone would be 1 s; the provider asked for 3.
    delay = (record.scheduled_for - record.attempt_history.get(number=1).finished_at).total_seconds()
    assert 2.9 <= delay <= 3.1
    record = drain(job)
    assert record.result["reply"] == "ok now"
    first, second = fake_llm.completion_requests
    assert second.at - first.at >= 2.0  # RQ's scheduler keeps whole seconds
    assert record.attempt_history.get(number=1).error_message == "The LLM provider answered HTTP 429."


def test_stream_cut_midway_is_retried_and_the_new_attempt_gets_a_new_segment(fake_llm, user, drain):
    fake_llm.then(Behaviour(chunks=["partial", " answ"], cut_after=1), Behaviour(chunks=["full", " answer"]))
    record = drain(_ask(user))
    assert record.result["reply"] == "full answer"
    entries = output_read_all(job_id=record.pk)
    # Each attempt starts a segment of its own; tokens within the coalescing window may share an entry.
    segments = [(e["attempt"], i) for i, e in enumerate(entries) if e["type"] == "segment"]
    assert [a for a, _ in segments] == [1, 2]
    first = "".join(e["text"] for e in entries[segments[0][1] + 1 : segments[1][1]])
    second = entries[segments[1][1] + 1 :]
    assert first == "partial" and all(e["type"] == "chunk" and e["attempt"] == 2 for e in second)
    assert "".join(e["text"] for e in second) == "full answer"


def test_timeout_is_retried(fake_llm, user, drain, settings):
    settings.OPENAI_TIMEOUT = 0.5
    fake_llm.then(Behaviour(delay_before=2), Behaviour(text="awake"))
    record = drain(_ask(user))
    assert record.result["reply"] == "awake"
    assert record.attempt_history.get(number=1).error_message == "The LLM provider timed out."


def test_permanent_rejection_answers_the_fallback_without_retrying(fake_llm, user, drain, metric):
    before = metric("slimy_chat_fallbacks_total", reason="provider_rejected")
    fake_llm.always(Behaviour(status=400, error_type="invalid_request_error"))
    record = drain(_ask(user))
    assert record.status == JobStatus.COMPLETED
    assert record.result["usedFallback"] is True
    assert record.result["fallbackReason"] == "provider_rejected"
    assert record.result["reply"] == FALLBACK_REPLIES["provider_rejected"]
    assert record.attempts == 1 and len(fake_llm.completion_requests) == 1
    assert metric("slimy_chat_fallbacks_total", reason="provider_rejected") - before == 1


def test_last_attempt_failing_answers_the_fallback(fake_llm, user, drain, metric):
    before = metric("slimy_chat_fallbacks_total", reason="provider_error")
    fake_llm.always(Behaviour(status=503))
    record = drain(_ask(user))
    assert record.status == JobStatus.COMPLETED
    assert record.result == {
        "reply": FALLBACK_REPLIES["provider_error"],
        "usedFallback": True,
        "fallbackReason": "provider_error",
        "model": "",
        "usage": {"promptTokens": 0, "completionTokens": 0},
    }
    assert record.attempts == 3 and len(fake_llm.completion_requests) == 3
    assert [a.outcome for a in record.attempt_history.all()] == ["retried", "retried", "completed"]
    assert metric("slimy_chat_fallbacks_total", reason="provider_error") - before == 1
    # Watchers see the fallback as a segment of its own.
    entries = output_read_all(job_id=record.pk)
    assert entries[-2]["type"] == "segment" and entries[-2]["label"] == "fallback"
    assert output_text(job_id=record.pk) == FALLBACK_REPLIES["provider_error"]


def test_no_key_answers_the_fallback_without_calling_anyone(fake_llm, user, drain, settings, metric):
    settings.OPENAI_API_KEY = ""
    before = metric("slimy_chat_fallbacks_total", reason="not_configured")
    record = drain(_ask(user))
    assert record.status == JobStatus.COMPLETED
    assert record.result["usedFallback"] is True and record.result["fallbackReason"] == "not_configured"
    assert record.result["reply"] == FALLBACK_REPLIES["not_configured"]
    assert fake_llm.requests == []
    assert metric("slimy_chat_fallbacks_total", reason="not_configured") - before == 1


def test_job_without_owner_fails_permanently(fake_llm, drain):
    record = drain(job_enqueue(job_type="chat_bot_interaction", payload={"prompt": "hi"}))
    assert record.status == JobStatus.FAILED and record.error_code == "owner_required"
    assert fake_llm.requests == []


def test_an_empty_completion_answers_the_fallback(fake_llm, user, drain):
    fake_llm.then(Behaviour(chunks=["", "  "]))
    record = drain(_ask(user))
    assert record.result["usedFallback"] is True and record.result["fallbackReason"] == "empty_reply"
    assert record.result["reply"] == FALLBACK_REPLIES["empty_reply"]
    assert record.result["usage"] == {"promptTokens": 11, "completionTokens": 2}  # the provider did answer
    assert len(fake_llm.completion_requests) == 1
