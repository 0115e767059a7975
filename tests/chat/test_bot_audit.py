"""Every chat interaction and every provider error lands in the audit trail, without the texts."""

import hashlib
import json

import pytest

from audit.models import AuditLog
from queues.services import job_enqueue
from tests.fake_llm import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "My secret plan is to paint the shed green."


def _ask(user, prompt=PROMPT):
    return job_enqueue(job_type="chat_bot_interaction", payload={"prompt": prompt}, owner=user, request_id="req-chat-1")


def _events(action):
    return list(AuditLog.objects.filter(action=action).order_by("id"))


def test_interaction_is_recorded_with_lengths_and_hash_only(fake_llm, user, drain, run_worker):
    fake_llm.then(Behaviour(chunks=["Green", " is", " nice."]))
    record = drain(_ask(user))
    run_worker(["audit"])
    [event] = _events("chat_bot_interaction")
    assert event.actor == user and event.success is True
    assert (event.resource_type, event.resource_id) == ("chat_job", str(record.pk))
    assert event.request_id == "req-chat-1"
    details = event.details
    assert details["promptLength"] == len(PROMPT)
    assert details["promptSha256"] == hashlib.sha256(PROMPT.encode()).hexdigest()
    assert details["replyLength"] == len("Green is nice.")
    assert details["usedFallback"] is False
    assert details["usage"] == {"promptTokens": 11, "completionTokens": 3}
    assert details["attempt"] == 1
    stored = json.dumps(details)
    assert "shed" not in stored and "Green" not in stored
    assert _events("chat_bot_error") == []


def test_each_failed_attempt_is_an_error_event_and_the_fallback_an_interaction(fake_llm, user, drain, run_worker):
    fake_llm.always(Behaviour(status=500))
    record = drain(_ask(user))
    run_worker(["audit"])
    errors = _events("chat_bot_error")
    assert [e.details["attempt"] for e in errors] == [1, 2, 3]
    assert all(e.success is False and e.actor == user for e in errors)
    assert [e.details["retrying"] for e in errors] == [True, True, False]
    assert errors[0].details["code"] == "llm_unavailable" and errors[0].details["status"] == 500
    assert errors[0].error_message == "The LLM provider answered HTTP 500."
    [interaction] = _events("chat_bot_interaction")
    assert interaction.resource_id == str(record.pk)
    assert interaction.details["usedFallback"] is True
    assert interaction.details["fallbackReason"] == "provider_error"
    assert interaction.details["replyLength"] == len(record.result["reply"])
