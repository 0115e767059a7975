"""Log context carried through requests and jobs: every line gets request_id (and job fields in a job).

JSON lines in production (LOG_FORMAT=json), readable text in development. A job runs inside its
request's id (stored on the JobRecord), so grepping one id shows the request, its jobs and their retries.
"""

import contextlib
import contextvars
import json
import logging
import time

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("slimy_log_context", default={})

CONTEXT_FIELDS = ("request_id", "job_id", "job_type", "queue")

access_logger = logging.getLogger("slimy.access")


def current_context() -> dict:
    return _context.get()


def current_request_id() -> str:
    return _context.get().get("request_id", "")


@contextlib.contextmanager
def log_context(**fields):
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record):
        ctx = _context.get()
        # Django logs a request's 4xx/5xx after the middleware chain returned (outside the context);
        # its records carry the request, which carries the id.
        request_id = getattr(getattr(record, "request", None), "request_id", None)
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                value = ctx.get(name)
                if value is None and name == "request_id":
                    value = request_id
                setattr(record, name, value if value not in (None, "") else "-")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (UTC times); structured extras go in `extra={"fields": {...}}`."""

    converter = time.gmtime

    def format(self, record):
        line = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, "-")
            if value not in (None, "-", ""):
                line[name] = str(value)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class AccessLogMiddleware:
    """One line per request (method, path, status, duration) inside the request's log context.

    Placed after RequestIdMiddleware so the line carries request_id; the query string is left out
    because it may carry secrets.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.monotonic()
        response = self.get_response(request)
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        user = getattr(request, "user", None)
        access_logger.info(
            "%s %s %s %.1fms", request.method, request.path, response.status_code, duration_ms,
            extra={"fields": {
                "method": request.method, "path": request.path, "status": response.status_code,
                "duration_ms": duration_ms,
                "user_id": user.pk if user is not None and user.is_authenticated else None,
            }},
        )
        return response
