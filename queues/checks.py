"""System checks: job definitions must have unique names and known queues."""

from django.conf import settings
from django.core.checks import Error, Warning, register

from queues.constants import QueueName, rq_queue_names


@register()
def check_job_definitions(app_configs=None, **kwargs):
    # Looked up when the check runs: the registry can be replaced (the tests give it a fresh one).
    from queues.definitions import registry

    errors = []
    definitions = registry.all()
    for name, first, second in registry.duplicates:
        errors.append(
            Error(
                f"Job type {name!r} is defined twice: {first.__module__}.{first.__qualname__} and "
                f"{second.__module__}.{second.__qualname__}.",
                id="queues.E001",
            )
        )
    for name, definition in definitions.items():
        if definition.queue not in QueueName.values:
            errors.append(Error(f"Job type {name!r} names unknown queue {definition.queue!r}.", id="queues.E002"))
        if definition.retry.max_attempts < 1:
            errors.append(Error(f"Job type {name!r} must allow at least one attempt.", id="queues.E003"))
    return errors


@register()
def check_rq_queues(app_configs=None, **kwargs):
    missing = sorted(set(rq_queue_names()) - set(getattr(settings, "RQ_QUEUES", {})))
    if missing:
        return [Warning(f"RQ_QUEUES lacks {', '.join(missing)}.", id="queues.W001")]
    return []


@register()
def check_tenant_settings(app_configs=None, **kwargs):
    """Fair dequeue and tracing settings (issue 17): a cap below 1 would never let a job run."""
    errors = []
    cap = settings.CHAT_TENANT_CONCURRENCY
    if not isinstance(cap, int) or cap < 1:
        errors.append(Error(f"CHAT_TENANT_CONCURRENCY must be an integer >= 1 (got {cap!r}).", id="queues.E201"))
    unknown = sorted(set(settings.FAIR_QUEUES) - set(QueueName.values))
    if unknown:
        errors.append(Error(f"FAIR_QUEUES names unknown queue(s): {', '.join(unknown)}.", id="queues.E202"))
    top = settings.METRICS_TENANT_TOP_N
    if not isinstance(top, int) or top < 0:
        errors.append(Error(f"METRICS_TENANT_TOP_N must be an integer >= 0 (got {top!r}).", id="queues.E203"))
    endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT
    if endpoint and not endpoint.startswith(("http://", "https://")):
        errors.append(
            Error(f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) URL (got {endpoint!r}).", id="queues.E204")
        )
    return errors
