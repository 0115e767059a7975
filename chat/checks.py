"""System checks for the LLM and chat-bot settings (read at use, so mistakes surface here first)."""

from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_llm_settings(app_configs=None, **kwargs):
    from chat.jobs import ChatBotInteractionJob

    errors = []

    def positive(name, id_):
        value = getattr(settings, name, None)
        if not isinstance(value, (int, float)) or value <= 0:
            errors.append(Error(f"{name} must be a positive number (got {value!r}).", id=id_))

    positive("OPENAI_TIMEOUT", "chat.E001")
    positive("OPENAI_STREAM_MAX_SECONDS", "chat.E001")
    positive("OPENAI_MAX_TOKENS", "chat.E001")
    positive("LLM_BREAKER_FAILURES", "chat.E001")
    positive("LLM_BREAKER_COOLDOWN", "chat.E001")
    positive("CHAT_CONTEXT_TOKEN_BUDGET", "chat.E001")
    positive("CHAT_RETRY_ATTEMPTS", "chat.E001")
    positive("JOB_EVENTS_HEARTBEAT", "chat.E001")
    positive("JOB_EVENTS_MAX_SECONDS", "chat.E001")
    if (
        isinstance(settings.OPENAI_STREAM_MAX_SECONDS, (int, float))
        and settings.OPENAI_STREAM_MAX_SECONDS >= ChatBotInteractionJob.timeout
    ):
        errors.append(
            Error(
                f"OPENAI_STREAM_MAX_SECONDS must be below the chat job's timeout ({ChatBotInteractionJob.timeout} s), "
                "or the worker kills a slow reply before it can answer the fallback.",
                id="chat.E002",
            )
        )
    url = urlparse(settings.OPENAI_BASE_URL or "")
    if url.scheme not in ("http", "https") or not url.netloc:
        errors.append(
            Error(f"OPENAI_BASE_URL must be an http(s) URL (got {settings.OPENAI_BASE_URL!r}).", id="chat.E003")
        )
    return errors


@register()
def check_budget_settings(app_configs=None, **kwargs):
    """Provider budgets and quotas (issue 17): 0 turns one off, a negative value is a mistake."""
    errors = []
    for name in ("OPENAI_RPM", "OPENAI_TPM", "CHAT_TENANT_DAILY_TOKENS"):
        value = getattr(settings, name, None)
        if not isinstance(value, int) or value < 0:
            errors.append(Error(f"{name} must be an integer >= 0, 0 = no limit (got {value!r}).", id="chat.E101"))
    return errors
