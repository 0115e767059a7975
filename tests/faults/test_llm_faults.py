"""Scenario 9: the LLM provider fails (500s, timeouts, cut streams), then recovers."""

import time

import pytest

from chat.bot import reply_job_id
from chat.models import Message
from queues.models import JobRecord
from queues.services import job_enqueue
from tests.fake_llm import Behaviour, FakeLLM
from tests.faults.harness import Fleet, api_user, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ATTEMPTS = 3
FAILURES_TO_OPEN = 4


@pytest.fixture
def provider():
    server = FakeLLM().start()
    yield server
    server.stop()


def _ask(user, conversation, n, tag):
    return [
        str(
            job_enqueue(
                job_type="chat_bot_interaction",
                owner=user,
                payload={"prompt": f"{tag} {i}", "conversationId": conversation},
            ).pk
        )
        for i in range(n)
    ]


def _results(ids):
    return {str(r.pk): r.result or {} for r in JobRecord.objects.filter(pk__in=ids)}


def test_scenario_9_llm_provider_failing(tmp_path, provider, fault_env, fault_mode, ledger, record_figures):
    from django.contrib.auth import get_user_model

    _, conversation = api_user(username="chatter")
    user = get_user_model().objects.get(username="chatter")
    cooldown = fault_mode.pick(4, 15)
    env = fault_env(
        OPENAI_API_KEY=provider.api_key,
        OPENAI_BASE_URL=provider.base_url,
        OPENAI_TIMEOUT=1,
        OPENAI_STREAM_MAX_SECONDS=5,
        CHAT_RETRY_ATTEMPTS=ATTEMPTS,
        CHAT_RETRY_BACKOFF=1,
        LLM_BREAKER_FAILURES=FAILURES_TO_OPEN,
        LLM_BREAKER_COOLDOWN=cooldown,
    )
    # Every way a provider fails: server errors, a stall past the client's timeout, a stream cut mid-body.
    failing = [
        Behaviour(status=500),
        Behaviour(chunks=["partial", " answer"], stall_after=1, stall_seconds=3),
        Behaviour(chunks=["cut", " short", " here"], cut_after=1),
    ]
    provider.always(failing[0])
    provider.then(*(failing * 200))
    fleet = Fleet(tmp_path, env, workers=2).start()
    try:
        outage = _ask(user, conversation, fault_mode.pick(8, 24), "during the outage")
        ledger.wait_final(outage, timeout=fault_mode.pick(120, 300))
        calls_during_outage = len(provider.completion_requests)
        provider.always(Behaviour(text="healthy again"))  # the provider recovers
        healed_at = time.monotonic()
        probes = []  # one at a time until a real reply comes back: fallbacks while the breaker is open

        def replied():
            probes.extend(_ask(user, conversation, 1, "probe"))
            ledger.wait_final(probes[-1:], timeout=60)
            return not _results(probes[-1:])[probes[-1]].get("usedFallback", True)

        wait_until(replied, cooldown + 60, "the breaker to close and a real reply", interval=0.5)
        recovery = time.monotonic() - healed_at
        after = _ask(user, conversation, fault_mode.pick(4, 12), "after recovery")
        ledger.wait_final(after, timeout=120)
    finally:
        fleet.stop()
    ids = outage + probes + after
    rep = ledger.report(ids, effect="message")  # the prompt row, keyed by the job id
    assert not rep.problems(), (rep, fleet.logs())
    assert rep.max_attempts_seen <= ATTEMPTS
    during = _results(outage)
    reasons = [r.get("fallbackReason") for r in during.values()]
    assert all(r.get("usedFallback") for r in during.values())  # everybody got an answer: the fallback
    assert set(reasons) <= {"provider_error", "breaker_open"} and "breaker_open" in reasons, reasons
    # Bounded retries: never more provider calls than attempts allow, and the open breaker saved some.
    assert calls_during_outage < len(outage) * ATTEMPTS
    recovered = _results(after)
    assert not any(r.get("usedFallback") for r in recovered.values()), recovered  # the breaker closed
    real = [i for i, r in _results(ids).items() if not r.get("usedFallback")]
    replies = Message.objects.filter(job_id__in=[reply_job_id(i) for i in ids])
    assert replies.count() == len(real) == len(after) + 1  # one saved reply per real answer, none for a fallback
    record_figures(
        "9 LLM provider failing",
        rep,
        recovery=recovery,
        notes=f"500s, {1}-s timeouts, cut streams: {len(outage)} replies were fallbacks "
        f"({reasons.count('breaker_open')} by the open breaker) after {calls_during_outage} "
        f"provider calls (at most {len(outage) * ATTEMPTS} without the breaker); breaker "
        f"cool-down {cooldown} s; {len(probes) - 1} fallback(s) while it stayed open; s from provider "
        "healthy to the first real reply",
    )
