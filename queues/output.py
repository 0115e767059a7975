"""A job's output log: text a running job produces, readable from any web process while it runs.

One Redis stream per job (`slimy:job:<id>:output`, written with XADD, read with XREAD). Entries are
`segment` markers — each attempt starts a new segment, and a job may open a labelled one (a
fallback, say) — and `chunk`s of text. Stream ids are the cursors clients resume from. The log
outlives retries and expires with the job's result (its TTL is renewed at every segment and set to
the result TTL when the job closes it).

It knows nothing about what a job writes, and it does not record job states: those are the
ledger's (PostgreSQL); the event stream (queues.output_apis) merges the two.
"""

from __future__ import annotations

import re

from django.conf import settings

from queues.definitions import registry
from queues.redis import get_connection
from slimy_site.exceptions import ValidationFailed

KEY = "slimy:job:{}:output"
# Bound the memory one runaway job can take; older entries are trimmed (approximately).
MAX_ENTRIES = 50_000
MAX_READ = 1_000
_CURSOR = re.compile(r"^(0|\d{1,20}(-\d{1,20})?)$")

SEGMENT, CHUNK = "segment", "chunk"


def output_key(job_id) -> str:
    return KEY.format(job_id)


class InvalidCursor(ValidationFailed):
    code = "invalid_cursor"
    message = "The cursor is not valid."


def parse_cursor(value: str | None) -> str:
    """A stream id from a client (`?after=` or `Last-Event-ID`); empty means from the beginning."""
    value = (value or "").strip()
    if not value:
        return "0"
    # Stream ids are two unsigned 64-bit numbers; Redis refuses anything larger.
    if not _CURSOR.match(value) or any(int(part) >= 2**64 for part in value.split("-")):
        raise InvalidCursor(details={"after": ["Must be a cursor returned by this API, e.g. 1712345678901-0."]})
    return value


class OutputWriter:
    """Appends one job's output. Cheap enough to call per token: one XADD each."""

    def __init__(self, *, job_id: str, attempt: int, running_ttl: int, result_ttl: int):
        self.key = output_key(job_id)
        self.attempt = attempt
        self.running_ttl = running_ttl
        self.result_ttl = result_ttl
        self.written = 0

    def start_segment(self, label: str = "attempt") -> str:
        """Mark where a new part begins (every attempt starts with one)."""
        pipe = get_connection().pipeline(transaction=False)
        pipe.xadd(self.key, {"type": SEGMENT, "attempt": self.attempt, "label": label},
                  maxlen=MAX_ENTRIES, approximate=True)
        pipe.expire(self.key, self.running_ttl)
        entry_id = pipe.execute()[0]
        return entry_id.decode() if isinstance(entry_id, bytes) else entry_id

    def write(self, text: str) -> None:
        if not text:
            return
        get_connection().xadd(self.key, {"type": CHUNK, "attempt": self.attempt, "text": text},
                              maxlen=MAX_ENTRIES, approximate=True)
        self.written += len(text)

    def close(self) -> None:
        """The job is done with its output: keep it as long as its result."""
        get_connection().expire(self.key, self.result_ttl)


def output_writer_open(*, job_id: str, job_type: str, attempt: int) -> OutputWriter:
    """A writer for this attempt, its first segment already started."""
    definition = registry.get(job_type)
    result_ttl = (definition.result_ttl if definition else None) or settings.JOB_RESULT_TTL
    timeout = definition.timeout if definition else 600
    backoff = definition.retry.backoff_max if definition else 300
    # While the job may still run or wait for a retry, outlive both.
    writer = OutputWriter(job_id=job_id, attempt=attempt, running_ttl=int(result_ttl + timeout + backoff),
                          result_ttl=int(result_ttl))
    writer.start_segment()
    return writer


def _entry(entry_id, fields: dict) -> dict:
    data = {k.decode(): v.decode() for k, v in fields.items()}
    entry = {"id": entry_id.decode() if isinstance(entry_id, bytes) else entry_id, "type": data.get("type", CHUNK),
             "attempt": int(data.get("attempt") or 0)}
    if entry["type"] == SEGMENT:
        entry["label"] = data.get("label", "attempt")
    else:
        entry["text"] = data.get("text", "")
    return entry


def output_read(*, job_id, after: str = "0", limit: int = MAX_READ, block_ms: int | None = None) -> list[dict]:
    """Entries after the cursor (oldest first); with `block_ms`, wait up to that long for the first one."""
    limit = max(1, min(limit, MAX_READ))
    answer = get_connection().xread({output_key(job_id): after}, count=limit, block=block_ms)
    if not answer:
        return []
    [(_key, items)] = answer  # one stream asked, one [key, entries] pair answered
    return [_entry(entry_id, fields) for entry_id, fields in items]


def output_text(*, job_id) -> str:
    """The text of the latest segment (what the job's last attempt, or its fallback, wrote)."""
    text: list[str] = []
    for entry in output_read_all(job_id=job_id):
        if entry["type"] == SEGMENT:
            text = []
        else:
            text.append(entry["text"])
    return "".join(text)


def output_read_all(*, job_id) -> list[dict]:
    entries, cursor = [], "0"
    while True:
        batch = output_read(job_id=job_id, after=cursor)
        if not batch:
            return entries
        entries.extend(batch)
        cursor = batch[-1]["id"]


def output_exists(*, job_id) -> bool:
    return bool(get_connection().exists(output_key(job_id)))
