"""chat.llm against the fake provider: streaming, usage, and how each failure is classified."""

import asyncio
import datetime as dt
import email.utils

import pytest

from chat.llm import LLMError, LLMNotConfigured, llm_stream_completion, parse_retry_after
from tests.fake_llm import Behaviour

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


def _complete(deltas=None):
    # The stream is read with AsyncOpenAI: each call runs on an event loop of its own, as a job does.
    return asyncio.run(
        llm_stream_completion(messages=MESSAGES, on_delta=(deltas.append if deltas is not None else lambda t: None))
    )


def test_streams_deltas_and_reports_usage_and_model(fake_llm, settings):
    settings.OPENAI_MODEL = "test-model"
    settings.OPENAI_MAX_TOKENS = 77
    fake_llm.then(Behaviour(chunks=["Hel", "lo", " there"], prompt_tokens=9, model="test-model-2025"))
    deltas = []
    completion = _complete(deltas)
    assert deltas == ["Hel", "lo", " there"]
    assert completion.text == "Hello there"
    assert (completion.prompt_tokens, completion.completion_tokens) == (9, 3)
    assert completion.model == "test-model-2025"
    assert completion.finish_reason == "stop"
    [request] = fake_llm.completion_requests
    assert request.headers["authorization"] == f"Bearer {fake_llm.api_key}"
    assert request.body["model"] == "test-model"
    assert request.body["max_tokens"] == 77
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["messages"] == MESSAGES


@pytest.mark.parametrize(
    "status, code",
    [(500, "llm_unavailable"), (503, "llm_unavailable"), (429, "llm_rate_limited"), (408, "llm_unavailable")],
)
def test_server_errors_and_rate_limits_are_transient(fake_llm, status, code):
    fake_llm.then(Behaviour(status=status, retry_after="7" if status == 429 else None))
    with pytest.raises(LLMError) as err:
        _complete()
    assert err.value.transient is True
    assert err.value.code == code
    assert err.value.status == status
    assert err.value.retry_after == (7.0 if status == 429 else None)
    assert len(fake_llm.completion_requests) == 1  # the client itself never retries


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_client_errors_are_permanent(fake_llm, status):
    fake_llm.then(Behaviour(status=status, error_type="invalid_request_error"))
    with pytest.raises(LLMError) as err:
        _complete()
    assert err.value.transient is False
    assert err.value.code == "llm_rejected"
    assert err.value.status == status


def test_wrong_key_is_a_permanent_401(fake_llm, settings):
    settings.OPENAI_API_KEY = "sk-wrong"
    with pytest.raises(LLMError) as err:
        _complete()
    assert (err.value.status, err.value.transient) == (401, False)


def test_stream_cut_midway_is_a_transient_connection_error(fake_llm):
    fake_llm.then(Behaviour(chunks=["a", "b", "c", "d"], cut_after=2))
    deltas = []
    with pytest.raises(LLMError) as err:
        _complete(deltas)
    assert deltas == ["a", "b"]
    assert err.value.code == "llm_connection_error" and err.value.transient


def test_provider_that_never_answers_times_out(fake_llm, settings):
    settings.OPENAI_TIMEOUT = 0.5
    fake_llm.then(Behaviour(delay_before=3))
    with pytest.raises(LLMError) as err:
        _complete()
    assert err.value.code == "llm_timeout" and err.value.transient


def test_stream_that_stalls_midway_times_out(fake_llm, settings):
    settings.OPENAI_TIMEOUT = 0.5
    fake_llm.then(Behaviour(chunks=["a", "b", "c"], stall_after=1, stall_seconds=3))
    deltas = []
    with pytest.raises(LLMError) as err:
        _complete(deltas)
    assert deltas == ["a"]
    assert err.value.code == "llm_timeout"


def test_slow_but_steady_stream_is_fine(fake_llm, settings):
    settings.OPENAI_TIMEOUT = 0.5
    fake_llm.then(Behaviour(chunks=["a", "b", "c"], delay_per_chunk=0.2))
    assert _complete().text == "abc"


def test_whole_reply_deadline(fake_llm, settings):
    settings.OPENAI_STREAM_MAX_SECONDS = 0.3
    fake_llm.then(Behaviour(chunks=list("abcdefgh"), delay_per_chunk=0.1))
    with pytest.raises(LLMError) as err:
        _complete()
    assert err.value.code == "llm_timeout" and err.value.transient


def test_error_event_inside_the_stream_is_transient(fake_llm):
    fake_llm.then(Behaviour(chunks=["a", "b"], error_event_after=1))
    with pytest.raises(LLMError) as err:
        _complete()
    assert err.value.code == "llm_stream_error" and err.value.transient


def test_no_key_means_not_configured_and_no_request(fake_llm, settings):
    settings.OPENAI_API_KEY = ""
    with pytest.raises(LLMNotConfigured):
        _complete()
    assert fake_llm.requests == []


def test_exception_from_the_callback_propagates_and_closes_the_stream(fake_llm):
    fake_llm.then(Behaviour(chunks=list("abcdef")))

    class Stop(Exception):
        pass

    def on_delta(text):
        if text == "c":
            raise Stop()

    with pytest.raises(Stop):
        asyncio.run(llm_stream_completion(messages=MESSAGES, on_delta=on_delta))


def test_retry_after_parsing():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    seconds = parse_retry_after({"retry-after": email.utils.format_datetime(later, usegmt=True)})
    assert 100 < seconds <= 120


@pytest.mark.parametrize("headers", [{"retry-after": "inf"}, {"retry-after": "nan"}, {"retry-after-ms": "nan"}])
def test_non_finite_retry_after_is_ignored(headers):
    from chat.llm import parse_retry_after

    assert parse_retry_after(headers) is None
