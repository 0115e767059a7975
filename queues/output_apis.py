"""Watching a job while it runs: its output log by cursor, and Server-Sent Events.

`GET /api/jobs/<id>/output?after=<cursor>` answers the entries after a cursor (polling clients).
`GET /api/jobs/<id>/events` streams `state` events (from the ledger) and `segment`/`chunk` events
(from the output log) and ends with the final state. Event ids are output-log cursors, so a client
that reconnects with `Last-Event-ID` (browsers' EventSource does it by itself) misses nothing and
sees nothing twice. The stream is a plain WSGI iterator: it works under gunicorn's gthread workers
(one thread per open stream) and ASGI servers alike; it blocks on Redis (XREAD) for short slices,
sends heartbeat comments so a vanished client is noticed, and closes after JOB_EVENTS_MAX_SECONDS
(the client reconnects and resumes). Owner (or staff) only; anyone else gets 404 job_not_found.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from queues.apis import JOB_ID_PARAMETER
from queues.constants import FINAL_STATUSES
from queues.models import JobRecord
from queues.output import MAX_READ, SEGMENT, output_read, parse_cursor
from queues.selectors import job_error_for_viewer, job_get_for_user
from slimy_site.exceptions import ValidationFailed
from slimy_site.negotiation import StrictFormatNegotiation
from slimy_site.schema import error_responses
from slimy_site.serializers import ErrorSerializer

BLOCK_MS = 500  # one XREAD waits at most this long, so state changes and disconnects are seen quickly
STATE_POLL_SECONDS = 0.5  # the ledger is read at most this often per stream
DEFAULT_LIMIT = 500


class EventStreamRenderer(BaseRenderer):
    """Lets clients ask for `text/event-stream`; errors before the stream starts are still JSON."""

    media_type = "text/event-stream"
    format = "event-stream"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data, cls=DjangoJSONEncoder).encode()


def _limit(raw) -> int:
    if raw in (None, ""):
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except (TypeError, ValueError):
        value = 0
    if not 1 <= value <= MAX_READ:
        raise ValidationFailed(code="invalid_limit", details={"limit": [f"Must be an integer from 1 to {MAX_READ}."]})
    return value


# What parse_cursor accepts (19 digits always fit the 64 bits of a stream id part).
CURSOR_PATTERN = r"^(0|[0-9]{1,19}(-[0-9]{1,19})?)$"
AFTER = OpenApiParameter("after", {"type": "string", "pattern": CURSOR_PATTERN}, OpenApiParameter.QUERY,
                         required=False,
                         description="A cursor (an entry id) from an earlier answer; omitted: from the start.")
LIMIT = OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_READ}, OpenApiParameter.QUERY,
                         required=False,
                         description=f"Entries per answer, 1-{MAX_READ} (default {DEFAULT_LIMIT}).")
LAST_EVENT_ID = OpenApiParameter("Last-Event-ID", {"type": "string", "pattern": CURSOR_PATTERN},
                                 OpenApiParameter.HEADER, required=False,
                                 description="Resume after this event (sent by EventSource on reconnect).")


def _bad_parameter(*codes) -> OpenApiResponse:
    return OpenApiResponse(
        response=ErrorSerializer, description="Error codes: " + ", ".join(f"`{c}`" for c in codes),
        examples=[OpenApiExample(c, response_only=True, status_codes=["400"],
                                 value={"ok": False, "error": c, "message": "The input is not valid."}) for c in codes],
    )


class JobOutputApi(APIView):
    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        jobId = serializers.CharField()
        status = serializers.CharField()
        attempt = serializers.IntegerField()
        chunks = serializers.ListField(child=serializers.DictField())
        cursor = serializers.CharField()
        more = serializers.BooleanField()
        done = serializers.BooleanField()

    @extend_schema(operation_id="jobs_output", tags=["jobs"], parameters=[JOB_ID_PARAMETER, AFTER, LIMIT],
                   responses={200: OutputSerializer, 400: _bad_parameter("invalid_cursor", "invalid_limit"),
                              **error_responses("job_not_found")})
    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        after = parse_cursor(request.query_params.get("after"))
        limit = _limit(request.query_params.get("limit"))
        # The status is read before the log: a final status then guarantees the log is complete.
        entries = output_read(job_id=job.pk, after=after, limit=limit)
        more = len(entries) == limit
        return Response(self.OutputSerializer({
            "ok": True, "jobId": str(job.pk), "status": job.status, "attempt": job.attempts, "chunks": entries,
            "cursor": entries[-1]["id"] if entries else after, "more": more,
            "done": job.status in FINAL_STATUSES and not more,
        }).data)


class JobEventSerializer(serializers.Serializer):
    """One Server-Sent Event of the stream (OpenAPI 3.0 describes a stream by its events)."""

    id = serializers.CharField(required=False, help_text="An output-log cursor: resume after it.")
    event = serializers.ChoiceField(choices=["state", "segment", "chunk"], required=False)
    data = serializers.CharField(required=False, help_text="JSON text.")
    retry = serializers.IntegerField(required=False, help_text="Reconnection delay in milliseconds.")


class JobEventsApi(APIView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]
    content_negotiation_class = StrictFormatNegotiation

    @extend_schema(
        operation_id="jobs_events", tags=["jobs"], parameters=[JOB_ID_PARAMETER, AFTER, LAST_EVENT_ID],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                JobEventSerializer, description="Events `state`, `segment`, `chunk` (JSON data); the final state ends it."),
            400: _bad_parameter("invalid_cursor"), **error_responses("job_not_found"),
        },
    )
    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        cursor = parse_cursor(request.headers.get("Last-Event-ID") or request.query_params.get("after"))
        response = StreamingHttpResponse(job_event_stream(job_id=job.pk, cursor=cursor, viewer=request.user),
                                         content_type="text/event-stream; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
        return response


def _event(kind: str, data: dict, event_id: str | None = None) -> str:
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines += [f"event: {kind}", "data: " + json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"))]
    return "\n".join(lines) + "\n\n"


def _state(job: JobRecord | None, viewer=None) -> dict:
    if job is None:
        return {"status": "gone"}  # the record was purged by retention
    state = {"status": job.status, "attempt": job.attempts, "maxAttempts": job.max_attempts}
    if job.progress is not None:
        state["progress"] = job.progress
    if job.status in FINAL_STATUSES:
        state["result"] = job.result
        if job.error_message:
            # Same rule as the job endpoints: untyped errors are hidden from owners.
            state["error"] = job_error_for_viewer(job=job, viewer=viewer)
    return state


def _read_job(job_id) -> JobRecord | None:
    return (JobRecord.objects.filter(pk=job_id)
            .only("status", "attempts", "max_attempts", "progress", "result", "error_code", "error_message")
            .first())


def _entry_event(entry: dict) -> str:
    if entry["type"] == SEGMENT:
        return _event("segment", {"attempt": entry["attempt"], "label": entry["label"]}, entry["id"])
    return _event("chunk", {"attempt": entry["attempt"], "text": entry["text"]}, entry["id"])


def job_event_stream(*, job_id, cursor: str = "0", viewer=None) -> Iterator[str]:
    started = last_sent = time.monotonic()
    heartbeat = max(settings.JOB_EVENTS_HEARTBEAT, 0.5)
    yield "retry: 2000\n\n"  # EventSource waits this long (ms) before reconnecting
    sent_state = None
    last_poll = 0.0
    job = None
    while True:
        now = time.monotonic()
        if now - last_poll >= STATE_POLL_SECONDS or sent_state is None:
            job, last_poll = _read_job(job_id), now
        final = job is None or job.status in FINAL_STATUSES
        if final:
            # The job closed its log before it finished: drain what is left, then the final state.
            while entries := output_read(job_id=job_id, after=cursor):
                for entry in entries:
                    yield _entry_event(entry)
                cursor = entries[-1]["id"]
            yield _event("state", _state(job, viewer), cursor)
            return
        state = _state(job, viewer)
        if state != sent_state:
            yield _event("state", state, cursor)
            sent_state, last_sent = state, time.monotonic()
        entries = output_read(job_id=job_id, after=cursor, limit=MAX_READ, block_ms=BLOCK_MS)
        if any(entry["type"] == SEGMENT for entry in entries):
            # A new attempt began: announce its state before its first chunk.
            job, last_poll = _read_job(job_id), time.monotonic()
            state = _state(job, viewer)
            if state != sent_state and job is not None and job.status not in FINAL_STATUSES:
                yield _event("state", state, cursor)
                sent_state = state
        for entry in entries:
            yield _entry_event(entry)
        if entries:
            cursor, last_sent = entries[-1]["id"], time.monotonic()
        now = time.monotonic()
        if now - started >= settings.JOB_EVENTS_MAX_SECONDS:
            yield ": stream time limit reached; reconnect with Last-Event-ID\n\n"
            return
        if now - last_sent >= heartbeat:
            # A comment line: keeps proxies from timing out and makes a closed socket fail the next write.
            yield ": keep-alive\n\n"
            last_sent = now
