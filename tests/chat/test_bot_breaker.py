"""The circuit breaker: opens after consecutive provider failures, answers the fallback, then probes."""

import time

import pytest

from chat.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    breaker_allow,
    breaker_record_failure,
    breaker_record_success,
    breaker_state,
)
from queues.constants import JobStatus
from queues.services import job_enqueue
from tests.fake_llm import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def _ask(user, prompt="hello"):
    return job_enqueue(job_type="chat_bot_interaction", payload={"prompt": prompt}, owner=user)


def test_opens_after_the_threshold_and_a_success_closes_it(settings):
    settings.LLM_BREAKER_FAILURES = 3
    settings.LLM_BREAKER_COOLDOWN = 30
    assert breaker_state() == CLOSED
    assert [breaker_record_failure() for _ in range(2)] == [False, False]
    assert breaker_state() == CLOSED and breaker_allow()
    breaker_record_success()  # consecutive failures only
    assert [breaker_record_failure() for _ in range(3)] == [False, False, True]
    assert breaker_state() == OPEN
    assert breaker_allow() is False


def test_after_the_cooldown_one_probe_at_a_time(settings):
    settings.LLM_BREAKER_FAILURES = 1
    settings.LLM_BREAKER_COOLDOWN = 0.3
    assert breaker_record_failure() is True
    assert breaker_allow() is False
    time.sleep(0.4)
    assert breaker_state() == HALF_OPEN
    assert breaker_allow() is True  # the probe
    assert breaker_allow() is False  # everyone else waits for its verdict
    assert breaker_record_failure() is True  # the probe failed: open again
    assert breaker_state() == OPEN
    time.sleep(0.4)
    assert breaker_allow() is True
    breaker_record_success()
    assert breaker_state() == CLOSED
    assert breaker_allow() and breaker_allow()


def test_shared_by_every_worker_through_redis(settings, redis_conn):
    settings.LLM_BREAKER_FAILURES = 2
    breaker_record_failure()
    breaker_record_failure()
    assert redis_conn.exists("slimy:llm:breaker:open")
    assert 0 < redis_conn.pttl("slimy:llm:breaker:open") <= settings.LLM_BREAKER_COOLDOWN * 1000


def test_failing_provider_opens_the_breaker_and_later_replies_skip_it(fake_llm, user, drain, settings, metric):
    settings.LLM_BREAKER_FAILURES = 3
    settings.CHAT_RETRY_ATTEMPTS = 1  # each job: one call, then the fallback
    fake_llm.always(Behaviour(status=500))
    for n in range(3):
        record = drain(_ask(user, f"q{n}"))
        assert record.result["fallbackReason"] == "provider_error"
    assert len(fake_llm.completion_requests) == 3
    assert metric("slimy_llm_breaker_open") == 1

    before = metric("slimy_chat_fallbacks_total", reason="breaker_open")
    record = drain(_ask(user, "q3"))
    assert record.status == JobStatus.COMPLETED
    assert record.result["usedFallback"] is True and record.result["fallbackReason"] == "breaker_open"
    assert len(fake_llm.completion_requests) == 3  # the provider was not called
    assert metric("slimy_chat_fallbacks_total", reason="breaker_open") - before == 1


def test_breaker_closes_when_the_provider_recovers(fake_llm, user, drain, settings, metric):
    settings.LLM_BREAKER_FAILURES = 2
    # A cooldown long enough that a loaded machine still sees the breaker open right after it opened.
    settings.LLM_BREAKER_COOLDOWN = 3
    settings.CHAT_RETRY_ATTEMPTS = 1
    fake_llm.then(Behaviour(status=502), Behaviour(status=502))
    drain(_ask(user, "a"))
    drain(_ask(user, "b"))
    assert breaker_state() == OPEN
    time.sleep(3.1)
    record = drain(_ask(user, "c"))  # the probe; the provider answers again
    assert record.result["usedFallback"] is False
    assert breaker_state() == CLOSED
    assert metric("slimy_llm_breaker_open") == 0


def test_client_errors_do_not_count(fake_llm, user, drain, settings):
    settings.LLM_BREAKER_FAILURES = 2
    fake_llm.always(Behaviour(status=400))
    for n in range(3):
        drain(_ask(user, f"bad {n}"))
    assert breaker_state() == CLOSED
    assert len(fake_llm.completion_requests) == 3


def test_retries_count_as_consecutive_failures(fake_llm, user, drain, settings):
    settings.LLM_BREAKER_FAILURES = 3
    fake_llm.always(Behaviour(status=500))
    record = drain(_ask(user))
    assert record.attempts == 3 and record.result["fallbackReason"] == "provider_error"
    assert breaker_state() == OPEN


def test_a_probe_cancelled_before_it_calls_the_provider_frees_the_probe_lock(fake_llm, user, settings, redis_conn):
    from asgiref.sync import async_to_sync

    from chat.bot import ChatRequest, chat_bot_reply
    from queues.context import JobContext
    from queues.definitions import JobCancelled
    from queues.models import JobRecord
    from queues.services import job_cancel, job_start

    settings.LLM_BREAKER_FAILURES = 1
    settings.LLM_BREAKER_COOLDOWN = 0.2
    breaker_record_failure()
    time.sleep(0.3)
    assert breaker_state() == HALF_OPEN
    job = _ask(user)
    job_start(job_id=job.pk, worker_name="w")
    job_cancel(job=JobRecord.objects.get(pk=job.pk))
    context = JobContext(
        job_id=str(job.pk),
        job_type=job.job_type,
        queue=job.queue,
        attempt=1,
        max_attempts=3,
        owner_id=user.pk,
        request_id="",
    )
    with pytest.raises(JobCancelled):
        async_to_sync(chat_bot_reply)(request=ChatRequest(prompt="hello", owner_id=user.pk), context=context)
    assert not redis_conn.exists("slimy:llm:breaker:probe")
    assert breaker_allow() is True  # the next reply may probe at once
