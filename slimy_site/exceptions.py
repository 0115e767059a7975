"""One error type for the domain and one response shape for the API: {ok: false, error, message, details?}.

Everything under /api/ answers in this shape: DRF views through `api_exception_handler`, and what
happens outside DRF (unknown URLs, crashes in middleware, oversized bodies) through `api_not_found`,
`api_server_error` and `slimy_site.middleware`. 5xx bodies never carry internals.
"""

import logging

from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import Http404, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


class ApplicationError(Exception):
    """A domain error with a machine-readable code. Subclasses set `code` and `status`."""

    code = "application_error"
    status = 400
    message = "The request could not be processed."

    def __init__(self, message=None, *, code=None, status=None, details=None, headers=None):
        self.message = message or self.message
        self.code = code or self.code
        self.status = status or self.status
        self.details = details
        self.headers = headers or {}
        super().__init__(self.message)


class ValidationFailed(ApplicationError):
    code = "validation_error"
    status = 400
    message = "The input is not valid."


class NotFound(ApplicationError):
    code = "not_found"
    status = 404
    message = "Not found."


class Conflict(ApplicationError):
    code = "conflict"
    status = 409


class ServiceUnavailable(ApplicationError):
    code = "service_unavailable"
    status = 503


class RateLimited(ApplicationError):
    code = "rate_limited"
    status = 429
    message = "Too many requests; slow down."


class PayloadTooLarge(ApplicationError):
    code = "payload_too_large"
    status = 413
    message = "The request body is too large."


_DRF_CODES = {
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
    drf_exceptions.PermissionDenied: "permission_denied",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "rate_limited",
    drf_exceptions.ParseError: "malformed_request",
    drf_exceptions.ValidationError: "validation_error",
}

# Codes every API endpoint may answer, by status; endpoints document their own on top
# (slimy_site.schema.error_responses). Keep in step with the README's table.
COMMON_ERROR_CODES = {
    400: ("malformed_request",),
    401: ("not_authenticated", "authentication_failed"),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
    429: ("rate_limited",),
    500: ("internal_error",),
    503: ("database_unavailable",),
}


def error_body(code: str, message: str, details=None) -> dict:
    body = {"ok": False, "error": code, "message": message}
    if details is not None:
        body["details"] = details
    return body


def api_exception_handler(exc, context):
    # Imported here: rest_framework.views loads the throttle classes, which import this module.
    from rest_framework.views import exception_handler as drf_exception_handler
    from rest_framework.views import set_rollback

    # A job-submitting view answered before its rate-limit charge was made (queues.api.throttling.rate_limit_defer):
    # charge it now; a caller over the limit gets the 429 it would have got before the view ran.
    settle = getattr(context.get("request"), "settle_deferred_rate_limits", None)
    if settle is not None:
        exc = settle() or exc
    if isinstance(exc, ApplicationError):
        set_rollback()
        answer = Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
        for name, value in exc.headers.items():
            answer[name] = value
        return answer
    if isinstance(exc, OperationalError):
        # PostgreSQL unreachable (fault suite, scenario 8): a clear, retryable 503 instead of a 500.
        logger.warning("database unavailable: %s", exc)
        return Response(
            error_body("database_unavailable", "The database is unavailable; retry later."),
            status=503,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        # Unexpected: log with the traceback, answer without internals.
        set_rollback()
        logger.exception("unhandled error in API view")
        return Response(error_body("internal_error", "An internal error occurred."), status=500)

    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, drf_exceptions.ValidationError):
        return Response(
            error_body(code, "The input is not valid.", exc.detail), status=400, headers=_copy_headers(response)
        )
    detail = exc.detail if isinstance(exc, drf_exceptions.APIException) else str(exc)
    message = str(detail) if not isinstance(detail, (list, dict)) else "Request failed."
    if isinstance(exc, drf_exceptions.PermissionDenied) and message.startswith("CSRF Failed"):
        code = "csrf_failed"
    return Response(error_body(code, message), status=response.status_code, headers=_copy_headers(response))


def _copy_headers(response):
    return {k: v for k, v in response.items() if k in ("Retry-After", "WWW-Authenticate", "Allow")}


def is_api_request(request) -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def api_error_response(code: str, message: str, status: int, details=None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status=status)


def api_not_found(request, exception=None):
    """handler404: the error shape under /api/, Django's page elsewhere."""
    if is_api_request(request):
        return api_error_response("not_found", "Not found.", 404)
    return defaults.page_not_found(request, exception)


def api_server_error(request):
    """handler500: no internals in the body, whatever went wrong."""
    if is_api_request(request):
        return api_error_response("internal_error", "An internal error occurred.", 500)
    return defaults.server_error(request)
