"""System checks for the fairness, budget, quota and tracing settings."""

from chat.checks import check_budget_settings
from queues.checks import check_tenant_settings


def _ids(errors):
    return sorted(e.id for e in errors)


def test_defaults_pass():
    assert check_tenant_settings() == [] and check_budget_settings() == []


def test_bad_fairness_and_tracing_settings(settings):
    settings.CHAT_TENANT_CONCURRENCY = 0
    settings.FAIR_QUEUES = ["chat", "nope"]
    settings.METRICS_TENANT_TOP_N = -1
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = "collector:4318"
    assert _ids(check_tenant_settings()) == ["queues.E201", "queues.E202", "queues.E203", "queues.E204"]


def test_negative_budgets_and_quota(settings):
    settings.OPENAI_RPM = -1
    settings.OPENAI_TPM = 0
    settings.CHAT_TENANT_DAILY_TOKENS = -5
    errors = check_budget_settings()
    assert _ids(errors) == ["chat.E101", "chat.E101"]
    assert {e.msg.split(" ")[0] for e in errors} == {"OPENAI_RPM", "CHAT_TENANT_DAILY_TOKENS"}
