"""System checks catch LLM settings that would break chat replies."""

from chat.checks import check_llm_settings


def _ids(errors):
    return sorted({e.id for e in errors})


def test_defaults_pass():
    assert check_llm_settings() == []


def test_non_positive_values_are_errors(settings):
    settings.OPENAI_TIMEOUT = 0
    settings.LLM_BREAKER_FAILURES = -1
    errors = check_llm_settings()
    assert _ids(errors) == ["chat.E001"]
    assert {e.msg.split(" ")[0] for e in errors} == {"OPENAI_TIMEOUT", "LLM_BREAKER_FAILURES"}


def test_stream_limit_must_stay_below_the_job_timeout(settings):
    settings.OPENAI_STREAM_MAX_SECONDS = 600
    assert _ids(check_llm_settings()) == ["chat.E002"]


def test_base_url_must_be_http(settings):
    settings.OPENAI_BASE_URL = "api.openai.com/v1"
    assert _ids(check_llm_settings()) == ["chat.E003"]
