"""Log context carried through requests and jobs: every line gets request_id (and job fields in a job)."""

import contextlib
import contextvars
import json
import logging

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("slimy_log_context", default={})

CONTEXT_FIELDS = ("request_id", "job_id", "job_type", "queue")


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
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ctx.get(name, "-"))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, "-")
            if value not in (None, "-", ""):
                line[name] = str(value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
