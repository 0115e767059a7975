"""System checks for the API settings (rate limits, body size) and the HTTPS proxy header."""

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_api_settings(app_configs=None, **kwargs):
    from queues.api.throttling import parse_rate
    from slimy_site.roles import Role

    errors = []
    limits = getattr(settings, "API_RATE_LIMITS", {})
    if not isinstance(limits, dict):
        return [Error("API_RATE_LIMITS must map scopes to rates, e.g. submit=30/min.", id="slimy_site.E001")]
    for scope, rate in limits.items():
        try:
            parse_rate(rate)
        except ValueError as exc:
            errors.append(Error(f"API_RATE_LIMITS[{scope!r}]: {exc}", id="slimy_site.E001"))
        if "@" in scope and scope.split("@", 1)[1] not in Role.values:
            errors.append(Error(f"API_RATE_LIMITS[{scope!r}] names an unknown role.", id="slimy_site.E002"))
    header = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if header is not None and (len(header) != 2 or not header[0].startswith("HTTP_") or not header[1]):
        errors.append(
            Error(
                "SECURE_PROXY_SSL_HEADER must look like HTTP_X_FORWARDED_PROTO=https (or none).", id="slimy_site.E004"
            )
        )
    if getattr(settings, "API_MAX_BODY_BYTES", 0) <= 0:
        errors.append(Error("API_MAX_BODY_BYTES must be a positive number of bytes.", id="slimy_site.E003"))
    return errors
