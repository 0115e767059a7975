"""Provider budgets shared through the private Redis; the provider stand-in enforces a real limit."""

import asyncio

import httpx2 as httpx  # the HTTP client the openai package is built on
import pytest
import redis
import redis.asyncio as aioredis

from chat.budget import (
    SAFETY,
    BudgetWaitTooLong,
    budget_acquire,
    budget_acquire_sync,
    budget_backoff_sync,
    budget_observe,
    budget_observe_sync,
    budget_settle_sync,
    budget_tokens_estimate,
    budget_wait,
    budget_wait_sync,
    parse_reset,
    ratelimit_headers,
)
from tests.fake_llm import Behaviour, FakeLLM

SPACING = 1 + SAFETY


def test_no_budget_configured_means_no_wait_and_no_redis(redis_conn, settings):
    settings.OPENAI_RPM = 0
    settings.OPENAI_TPM = 0
    assert budget_acquire_sync(tokens=10_000) == 0.0
    assert redis_conn.keys("slimy:budget:*") == []


def test_requests_are_spaced_evenly_and_a_refused_call_is_not_charged(redis_conn):
    assert budget_acquire_sync(tokens=1, rpm=60, tpm=0) == 0.0
    first = budget_acquire_sync(tokens=1, rpm=60, tpm=0)
    second = budget_acquire_sync(tokens=1, rpm=60, tpm=0)
    assert 0.9 < first <= SPACING
    assert second <= first  # the refused call took nothing: still one interval, not two


def test_settings_are_the_default_limits(redis_conn, settings):
    settings.OPENAI_RPM = 30
    settings.OPENAI_TPM = 0
    assert budget_acquire_sync(tokens=1) == 0.0
    assert 1.9 < budget_acquire_sync(tokens=1) <= 2 * SPACING


def test_tokens_are_charged_by_estimate_and_settled_by_real_usage(redis_conn):
    assert budget_acquire_sync(tokens=100, rpm=0, tpm=600) == 0.0
    wait = budget_acquire_sync(tokens=100, rpm=0, tpm=600)
    assert 9.5 < wait <= 10 * SPACING  # 100 of 600 tokens a minute = 10 s
    budget_settle_sync(estimated=100, actual=40, tpm=600)  # the call used less: refund 60 tokens
    assert 3.5 < budget_acquire_sync(tokens=100, rpm=0, tpm=600) <= 4 * SPACING
    budget_settle_sync(estimated=10, actual=70, tpm=600)  # another used more: charge 60 tokens more
    assert 9.5 < budget_acquire_sync(tokens=100, rpm=0, tpm=600) <= 10 * SPACING


def test_both_budgets_must_admit(redis_conn):
    assert budget_acquire_sync(tokens=600, rpm=6000, tpm=600) == 0.0
    assert budget_acquire_sync(tokens=1, rpm=6000, tpm=600) > 50  # requests have room, tokens do not


def test_every_process_shares_one_budget(redis_server, redis_conn):
    other = redis.Redis.from_url(redis_server.url)
    assert budget_acquire_sync(tokens=1, rpm=60, tpm=0, conn=redis_conn) == 0.0
    assert budget_acquire_sync(tokens=1, rpm=60, tpm=0, conn=other) > 0.9


def test_nothing_left_and_no_known_limit_holds_calls_until_the_reset(redis_conn, settings):
    settings.OPENAI_RPM = 0
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "3s"}
    assert budget_observe_sync(headers=headers)
    assert 2.5 < budget_acquire_sync(tokens=1, rpm=1000, tpm=0) <= 3.0


def test_nothing_left_with_a_known_limit_holds_for_one_calls_share(redis_conn):
    headers = {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "50s",
    }
    budget_observe_sync(headers=headers, rpm=600)
    assert 0.9 < budget_acquire_sync(tokens=1, rpm=600, tpm=0) <= SPACING  # 60/min: one call a second


def test_tokens_nothing_left_holds_for_a_typical_calls_share(redis_conn, settings):
    settings.OPENAI_MAX_TOKENS = 100
    budget_observe_sync(headers={"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "30s"}, tpm=6000)
    assert 0.9 < budget_acquire_sync(tokens=1, rpm=0, tpm=6000) <= SPACING  # 100 of 6000 tokens/min


def test_a_lower_limit_in_the_headers_tightens_the_configured_one(redis_conn):
    budget_observe_sync(
        headers={
            "x-ratelimit-limit-requests": "30",
            "x-ratelimit-remaining-requests": "29",
            "x-ratelimit-reset-requests": "2s",
        }
    )
    assert budget_acquire_sync(tokens=1, rpm=6000, tpm=0) == 0.0
    assert 1.9 < budget_acquire_sync(tokens=1, rpm=6000, tpm=0) <= 2 * SPACING


def test_a_higher_limit_in_the_headers_never_loosens_ours(redis_conn):
    budget_observe_sync(headers={"x-ratelimit-limit-tokens": "1000000"})
    assert redis_conn.hget("slimy:budget:openai:observed", "tokens") == b"1000000"
    assert budget_acquire_sync(tokens=500, rpm=0, tpm=600) == 0.0
    assert budget_acquire_sync(tokens=500, rpm=0, tpm=600) > 45


def test_responses_without_rate_headers_change_nothing(redis_conn):
    assert not budget_observe_sync(headers={"content-type": "application/json"})
    assert redis_conn.keys("slimy:budget:*") == []


def test_backoff_after_a_429_holds_everyone(redis_conn):
    budget_backoff_sync(seconds=4)
    assert 3.5 < budget_acquire_sync(tokens=1, rpm=1000, tpm=0) <= 4


@pytest.mark.parametrize(
    "value,seconds",
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("2.5", 2.5),
        ("0.250s", 0.25),
        ("soon", None),
        ("", None),
        (None, None),
        ("5x", None),
    ],
)
def test_reset_durations(value, seconds):
    assert parse_reset(value) == (pytest.approx(seconds) if seconds is not None else None)


def test_header_names_are_case_insensitive_enough():
    parsed = ratelimit_headers({"X-Ratelimit-Limit-Requests": "10", "X-Ratelimit-Remaining-Requests": "bad"})
    assert parsed.limit_requests == 10 and parsed.remaining_requests is None


def test_wait_loops_reporting_each_wait_and_charges_once_admitted(redis_conn):
    waits, slept = [], []

    def fake_sleep(seconds):
        slept.append(seconds)
        budget_backoff_sync(seconds=0)  # nothing: time passes only through the real clock below
        import time

        time.sleep(seconds)

    assert budget_acquire_sync(tokens=1, rpm=120, tpm=0) == 0.0
    waited = budget_wait_sync(tokens=1, rpm=120, tpm=0, on_wait=waits.append, sleep=fake_sleep)
    assert waits and waits == slept and waited == pytest.approx(sum(waits))
    assert budget_acquire_sync(tokens=1, rpm=120, tpm=0) > 0.4  # the admitted call was charged


def test_wait_gives_up_past_max_wait(redis_conn):
    budget_backoff_sync(seconds=30)
    with pytest.raises(BudgetWaitTooLong):
        budget_wait_sync(tokens=1, rpm=60, tpm=0, max_wait=5)


def test_estimate_counts_prompt_and_reply_cap(settings):
    settings.OPENAI_MAX_TOKENS = 500
    assert budget_tokens_estimate(prompt_chars=400) == 601
    assert budget_tokens_estimate(prompt_chars=0, max_tokens=10) == 11


def test_asyncio_twins(redis_server, redis_conn):
    async def scenario():
        conn = aioredis.Redis.from_url(redis_server.url)
        waits = []

        async def report(seconds):
            waits.append(seconds)

        try:
            first = await budget_acquire(tokens=1, rpm=240, tpm=0, conn=conn)
            waited = await budget_wait(tokens=1, rpm=240, tpm=0, conn=conn, on_wait=report)
            observed = await budget_observe(headers={"x-ratelimit-limit-requests": "7"}, conn=conn)
            return first, waited, waits, observed
        finally:
            await conn.aclose()

    first, waited, waits, observed = asyncio.run(scenario())
    assert first == 0.0 and waits and waited == pytest.approx(sum(waits)) and observed
    assert redis_conn.hget("slimy:budget:openai:observed", "requests") == b"7"


def test_the_default_async_client_follows_settings(redis_conn):
    assert asyncio.run(budget_acquire(tokens=1, rpm=60, tpm=0)) == 0.0
    assert budget_acquire_sync(tokens=1, rpm=60, tpm=0) > 0.9


# --- against the provider stand-in limited to N requests per period


def _complete(client, fake):
    return client.post(
        f"{fake.base_url}/chat/completions",
        headers={"Authorization": f"Bearer {fake.api_key}"},
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )


@pytest.fixture
def limited_llm():
    fake = FakeLLM().start()
    fake.always(Behaviour(text="ok"))
    yield fake
    fake.stop()


def test_stand_in_enforces_its_limit_with_429_and_headers(limited_llm):
    limited_llm.rate_limit(requests=3, period=60)
    with httpx.Client() as client:
        answers = [_complete(client, limited_llm) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert limited_llm.rejected == 2
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "2"
    assert answers[2].headers["x-ratelimit-remaining-requests"] == "0"
    assert 55 < parse_reset(answers[2].headers["x-ratelimit-reset-requests"]) <= 60
    assert 0 < float(answers[3].headers["retry-after"]) <= 60


def test_stand_in_counts_tokens_too(limited_llm):
    limited_llm.rate_limit(tokens=30, period=60)  # each answer: 11 prompt + 1 completion token
    with httpx.Client() as client:
        codes = [_complete(client, limited_llm).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


def test_budget_keeps_every_call_under_the_providers_limit(limited_llm, redis_conn):
    """10 requests per second at the provider = 600 a minute; the same budget here: zero 429s. Without the
    budget, the same calls get 429s (the check can fail)."""
    limited_llm.rate_limit(requests=10, period=1.0)
    with httpx.Client() as client:
        unbudgeted = [_complete(client, limited_llm).status_code for _ in range(25)]
        assert unbudgeted.count(429) > 0
        import time

        time.sleep(1.1)
        limited_llm.rate_limit(requests=10, period=1.0)
        for _ in range(25):
            budget_wait_sync(tokens=1, rpm=600, tpm=0)
            response = _complete(client, limited_llm)
            budget_observe_sync(headers=response.headers, rpm=600, tpm=0)
            assert response.status_code == 200
    assert limited_llm.rejected == 0
