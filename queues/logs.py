"""Log context carried through requests and jobs: every line gets request_id (and job fields in a job).

Two renderings of the same records, with the standard `logging` module (no extra library):
JSON lines for machines (LOG_FORMAT=json, the default when output is not a terminal) and compact,
coloured lines for people (ConsoleFormatter, the default in a terminal), each tagged with the process
that wrote it (`web`, `worker-…`, `reconciler`; SLIMY_PROCESS, set by `make run`). A job runs inside
its request's id (stored on the JobRecord), so grepping one id shows the request, its jobs and their
retries.
"""

import contextlib
import contextvars
import json
import logging
import re
import time

# The default is never mutated: log_context() sets a new dict each time.
_context: contextvars.ContextVar[dict] = contextvars.ContextVar("slimy_log_context", default={})  # noqa: B039

CONTEXT_FIELDS = ("request_id", "job_id", "job_type", "queue")

access_logger = logging.getLogger("slimy.access")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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


class LoggerFloorFilter(logging.Filter):
    """Drops records of the loggers under `prefixes` below `level`.

    A handler filter rather than a logger level because RQ sets its own loggers' levels when a worker
    starts (`rqworker` and `Worker.work` call `setup_loghandlers(level)`), overriding LOGGING.
    """

    def __init__(self, prefixes=(), level="WARNING"):
        super().__init__()
        self.prefixes = tuple(prefixes)
        self.level = logging.getLevelName(level.upper()) if isinstance(level, str) else int(level)
        if not isinstance(self.level, int):
            raise ValueError(f"Unknown log level {level!r}.")

    def filter(self, record):
        if record.levelno >= self.level:
            return True
        return not any(record.name == p or record.name.startswith(p + ".") for p in self.prefixes)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (UTC times); structured extras go in `extra={"fields": {...}}`."""

    # typeshed's overloads of gmtime do not match Formatter.converter's declared callable; it is the same call.
    converter = time.gmtime  # type: ignore[assignment]

    def __init__(self, *args, process_tag: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.process_tag = process_tag
        self._second: tuple[int | None, str] = (
            None,
            "",
        )  # the last second formatted (a worker writes hundreds of lines a second)

    def _timestamp(self, record) -> str:
        second = int(record.created)
        if self._second[0] != second:
            self._second = (second, self.formatTime(record, "%Y-%m-%dT%H:%M:%S"))
        return f"{self._second[1]}.{int(record.msecs):03d}Z"

    def format(self, record):
        message = record.getMessage()
        if "\x1b" in message:
            message = _ANSI.sub("", message)  # RQ colours some of its messages
        line = {
            "ts": self._timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "pid": record.process,
        }
        if self.process_tag:
            line["process"] = self.process_tag
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


_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_LEVEL_COLOURS = {
    "DEBUG": "\x1b[2m",
    "INFO": "\x1b[32m",
    "WARNING": "\x1b[33m",
    "ERROR": "\x1b[31;1m",
    "CRITICAL": "\x1b[41;97m",
}
_TAG_COLOURS = {"web": "\x1b[36m", "worker": "\x1b[35m", "reconciler": "\x1b[34m"}


class ConsoleFormatter(logging.Formatter):
    """One short line per record for a person at a terminal:

        07:48:15 web         INFO  slimy.access  GET /admin/ 200 12.3ms  req=0e127302

    time (local), process tag, level, logger, message, then the first 8 characters of the request and
    job ids when the line has them. Colours only when `colour` (a terminal, NO_COLOR unset); RQ's own
    escape codes are stripped from messages when colours are off.
    """

    TAG_WIDTH = 12

    def __init__(self, *args, process_tag: str = "", colour: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.process_tag = process_tag
        self.colour = colour

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.colour and code else text

    def format(self, record):
        tag = (self.process_tag or "-").ljust(self.TAG_WIDTH)
        role = self.process_tag.split("-", 1)[0]
        level = record.levelname
        message = record.getMessage()
        if not self.colour:
            message = _ANSI.sub("", message)
        ids = []
        for name, label in (("request_id", "req"), ("job_id", "job")):
            value = getattr(record, name, "-")
            if value not in (None, "", "-"):
                ids.append(f"{label}={str(value)[:8]}")
        parts = [
            self._paint(_DIM, self.formatTime(record, "%H:%M:%S")),
            self._paint(_TAG_COLOURS.get(role, ""), tag),
            self._paint(_LEVEL_COLOURS.get(level, ""), level.ljust(5)),
            self._paint(_DIM, record.name),
            message,
        ]
        line = " ".join(parts)
        if "\n" in line:  # a multi-line message (e.g. RQ's with a traceback): ids on its first line
            first, rest = line.split("\n", 1)
        else:
            first, rest = line, ""
        if ids:
            first += "  " + self._paint(_DIM, " ".join(ids))
        if record.exc_info:
            rest = (rest + "\n" if rest else "") + self.formatException(record.exc_info)
        return first + ("\n" + rest if rest else "")


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
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status_code,
            duration_ms,
            extra={
                "fields": {
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": duration_ms,
                    "user_id": user.pk if user is not None and user.is_authenticated else None,
                }
            },
        )
        return response
