"""The chat reply per tenant through a real worker and the provider stand-in: the daily quota (fallback
`quota_exceeded`, audited), the shared provider budget (a wait shows in progress, is no attempt) and
zero 429s when OPENAI_RPM is below the provider's limit."""

import threading
import time

import pytest
from django.db import connection

from audit.models import AuditLog
from chat.budget import budget_acquire_sync
from chat.models import TenantQuota
from chat.quotas import quota_usage
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.output import output_text
from queues.services import job_enqueue
from tests.fake_llm import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def _ask(user, prompt="What is a slime mold?", **payload):
    return job_enqueue(job_type="chat_bot_interaction", payload={"prompt": prompt, **payload}, owner=user)


def test_the_reply_is_charged_to_its_guild_or_its_user(fake_llm, user, drain):
    fake_llm.always(Behaviour(text="one two three", prompt_tokens=30))
    in_guild = drain(_ask(user, guildId="guild-7"))
    direct = drain(_ask(user))
    assert (in_guild.tenant, direct.tenant) == ("guild-7", f"user:{user.pk}")
    assert in_guild.result["usedFallback"] is False
    used = in_guild.result["usage"]["promptTokens"] + in_guild.result["usage"]["completionTokens"]
    assert used > 30
    assert quota_usage(tenant="guild-7") == used
    assert quota_usage(tenant=f"user:{user.pk}") == used


def test_over_quota_is_the_fallback_audited_without_calling_the_provider(fake_llm, user, drain, run_worker):
    TenantQuota.objects.create(tenant="guild-q", daily_tokens=5)  # less than any prompt's estimate
    record = drain(_ask(user, guildId="guild-q"))
    assert record.status == JobStatus.COMPLETED and record.attempts == 1
    assert record.result["usedFallback"] is True and record.result["fallbackReason"] == "quota_exceeded"
    assert fake_llm.completion_requests == []
    assert "used up its replies" in output_text(job_id=record.pk)
    run_worker(["audit"])
    [refused] = AuditLog.objects.filter(action="chat_bot_quota_exceeded")
    assert refused.success is False and refused.resource_id == str(record.pk)
    assert refused.details["tenant"] == "guild-q" and refused.details["limit"] == 5
    [reply] = AuditLog.objects.filter(action="chat_bot_interaction")
    assert reply.details["fallbackReason"] == "quota_exceeded"
    # Another guild is not limited by it.
    other = drain(_ask(user, guildId="guild-free"))
    assert other.result["usedFallback"] is False and len(fake_llm.completion_requests) == 1


def test_a_budget_wait_shows_in_progress_and_is_no_attempt(fake_llm, user, drain, settings):
    settings.OPENAI_RPM = 30  # one call every ~2 s
    assert budget_acquire_sync(tokens=1) == 0.0  # someone else just spent the budget
    record = _ask(user)
    seen = []

    def watch():
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                progress = JobRecord.objects.filter(pk=record.pk).values_list("progress", flat=True).first()
                if progress and progress.get("waitingFor") == "provider_budget":
                    seen.append(progress)
                    return
                time.sleep(0.02)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    done = drain(record)
    watcher.join()
    assert seen and 0 < seen[0]["seconds"] <= 2.1
    assert done.status == JobStatus.COMPLETED and done.attempts == 1 and done.result["usedFallback"] is False
    assert done.progress["budgetWaitedSeconds"] > 0.5
    assert [a.outcome for a in done.attempt_history.all()] == ["completed"]


def test_no_429_reaches_the_breaker_when_the_budget_is_below_the_providers_limit(fake_llm, user, drain, settings):
    fake_llm.always(Behaviour(text="ok"))
    # Control: no budget, the same burst, the provider answers 429s (the check below can fail).
    settings.CHAT_RETRY_ATTEMPTS = 1
    fake_llm.rate_limit(requests=3, period=3.0)  # 60 a minute, stated so in its headers
    control = [_ask(user, f"control {i}") for i in range(5)]
    drain(control[-1])
    assert fake_llm.rejected > 0

    from queues.connections import get_connection

    get_connection().flushdb()  # a fresh breaker and budget
    settings.CHAT_RETRY_ATTEMPTS = 3
    settings.OPENAI_RPM = 50
    fake_llm.rate_limit(requests=3, period=3.0)
    jobs = [_ask(user, f"question {i}") for i in range(5)]
    for job in jobs:
        drain(job)
    records = JobRecord.objects.filter(pk__in=[j.pk for j in jobs])
    assert fake_llm.rejected == 0
    assert all(r.status == JobStatus.COMPLETED and r.attempts == 1 and not r.result["usedFallback"] for r in records)
