"""Watching a job while it runs: its output log by cursor, and Server-Sent Events.

`GET /api/jobs/<id>/output?after=<cursor>` answers the entries after a cursor (polling clients).
`GET /api/jobs/<id>/events` streams `state` events (from the ledger) and `segment`/`chunk` events
(from the output log) and ends with the final state. Event ids are output-log cursors, so a client
that reconnects with `Last-Event-ID` (browsers' EventSource does it by itself) misses nothing and
sees nothing twice. The view checks the request on a thread (auth, owner, cursor, the stream caps of
queues.api.stream_limits); the stream is an async iterator fed by the process's output hub
(queues.api.output_watch), which slimy_site.asgi sends from the event loop (any other WSGI server gets
a synchronous iterator and lends it a thread). Heartbeat comments keep proxies open; the stream
closes after JOB_EVENTS_MAX_SECONDS, on server shutdown, or when its client falls 5,000 entries
behind, each time with a comment saying so (the client reconnects and resumes). Owner (or staff)
only; anyone else gets 404 job_not_found.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from queues.api.jobs import JOB_ID_PARAMETER
from queues.api.output_watch import iterate_sync, output_hub
from queues.api.stream_limits import StreamSlot, stream_slot_take
from queues.constants import FINAL_STATUSES
from queues.models import JobRecord
from queues.output import MAX_READ, SEGMENT, output_read, parse_cursor
from queues.selectors import job_error_for_viewer, job_get_for_user
from slimy_site.exceptions import ValidationFailed
from slimy_site.negotiation import StrictFormatNegotiation
from slimy_site.schema import error_responses
from slimy_site.serializers import ErrorSerializer

DEFAULT_LIMIT = 500
# Key in the ASGI scope where slimy_site.asgi takes an event stream over from the view's thread.
STREAM_HANDOFF = "slimy.stream_handoff"


class StreamHandoff:
    """Where the view leaves its stream for the event loop (`loop`) that will serve it."""

    def __init__(self, loop):
        self.loop = loop
        self.stream: EventStream | None = None


logger = logging.getLogger(__name__)


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
AFTER = OpenApiParameter(
    "after",
    {"type": "string", "pattern": CURSOR_PATTERN},
    OpenApiParameter.QUERY,
    required=False,
    description="A cursor (an entry id) from an earlier answer; omitted: from the start.",
)
LIMIT = OpenApiParameter(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_READ},
    OpenApiParameter.QUERY,
    required=False,
    description=f"Entries per answer, 1-{MAX_READ} (default {DEFAULT_LIMIT}).",
)
LAST_EVENT_ID = OpenApiParameter(
    "Last-Event-ID",
    {"type": "string", "pattern": CURSOR_PATTERN},
    OpenApiParameter.HEADER,
    required=False,
    description="Resume after this event (sent by EventSource on reconnect).",
)


def _bad_parameter(*codes) -> OpenApiResponse:
    return OpenApiResponse(
        response=ErrorSerializer,
        description="Error codes: " + ", ".join(f"`{c}`" for c in codes),
        examples=[
            OpenApiExample(
                c,
                response_only=True,
                status_codes=["400"],
                value={"ok": False, "error": c, "message": "The input is not valid."},
            )
            for c in codes
        ],
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

    @extend_schema(
        operation_id="jobs_output",
        tags=["jobs"],
        parameters=[JOB_ID_PARAMETER, AFTER, LIMIT],
        responses={
            200: OutputSerializer,
            400: _bad_parameter("invalid_cursor", "invalid_limit"),
            **error_responses("job_not_found"),
        },
    )
    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        after = parse_cursor(request.query_params.get("after"))
        limit = _limit(request.query_params.get("limit"))
        # The status is read before the log: a final status then guarantees the log is complete.
        entries = output_read(job_id=job.pk, after=after, limit=limit)
        more = len(entries) == limit
        return Response(
            self.OutputSerializer(
                {
                    "ok": True,
                    "jobId": str(job.pk),
                    "status": job.status,
                    "attempt": job.attempts,
                    "chunks": entries,
                    "cursor": entries[-1]["id"] if entries else after,
                    "more": more,
                    "done": job.status in FINAL_STATUSES and not more,
                }
            ).data
        )


class JobEventSerializer(serializers.Serializer):
    """One Server-Sent Event of the stream (OpenAPI 3.0 describes a stream by its events)."""

    id = serializers.CharField(required=False, help_text="An output-log cursor: resume after it.")
    event = serializers.ChoiceField(choices=["state", "segment", "chunk"], required=False)
    # The SSE field is named `data`, shadowing Serializer.data: this serializer only documents the schema.
    data = serializers.CharField(required=False, help_text="JSON text.")  # type: ignore[assignment]
    retry = serializers.IntegerField(required=False, help_text="Reconnection delay in milliseconds.")


class JobEventsApi(APIView):
    renderer_classes = [JSONRenderer, EventStreamRenderer]
    content_negotiation_class = StrictFormatNegotiation

    @extend_schema(
        operation_id="jobs_events",
        tags=["jobs"],
        parameters=[JOB_ID_PARAMETER, AFTER, LAST_EVENT_ID],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                JobEventSerializer,
                description="Events `state`, `segment`, `chunk` (JSON data); the final state ends it.",
            ),
            400: _bad_parameter("invalid_cursor"),
            **error_responses("job_not_found", "too_many_streams"),
        },
    )
    def get(self, request, job_id):
        # Everything that may refuse the stream runs here, before it starts (errors keep the usual shape);
        # under `make run`'s server the stream itself is then a coroutine on the event loop.
        job = job_get_for_user(job_id=job_id, user=request.user)
        cursor = parse_cursor(request.headers.get("Last-Event-ID") or request.query_params.get("after"))
        handoff = request.META.get("asgi.scope", {}).get(STREAM_HANDOFF)
        slot = stream_slot_take(user=request.user, loop=handoff.loop if handoff is not None else None)
        stream = EventStream(
            job_id=str(job.pk),
            cursor=cursor,
            viewer=request.user,
            slot=slot,
            request_id=getattr(request, "request_id", None),
        )
        if handoff is not None:
            handoff.stream = stream  # slimy_site.asgi sends it from the event loop once this thread is done
            body = iter(())
        else:
            body = stream.iterate_sync()  # any other server: the stream holds this thread while open
        response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
        return response


# Built once: json.dumps with any option builds a new encoder at every call, and a thousand streams
# encode an event each per token.
_STATE_JSON = DjangoJSONEncoder(separators=(",", ":")).encode  # a result may hold dates, decimals
_ENTRY_JSON = json.JSONEncoder(separators=(",", ":")).encode  # entries are strings and numbers only


def _event(kind: str, data: dict, event_id: str | None = None) -> str:
    head = f"id: {event_id}\nevent: {kind}\n" if event_id is not None else f"event: {kind}\n"
    return f"{head}data: {_STATE_JSON(data)}\n\n"


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


def _entry_event(entry: dict) -> str:
    if entry["type"] == SEGMENT:
        data = _ENTRY_JSON({"attempt": entry["attempt"], "label": entry["label"]})
        return f"id: {entry['id']}\nevent: segment\ndata: {data}\n\n"
    data = _ENTRY_JSON({"attempt": entry["attempt"], "text": entry["text"]})
    return f"id: {entry['id']}\nevent: chunk\ndata: {data}\n\n"


class EventStream:
    """One open stream: an async iterator of SSE text that gives its slot back however it ends.

    slimy_site.asgi iterates it on the event loop (and stops it the moment the client disconnects),
    then calls `aclose()`; other servers iterate `iterate_sync()`.
    """

    def __init__(self, *, job_id: str, cursor: str, viewer, slot: StreamSlot, request_id: str | None):
        self.job_id, self.cursor, self.viewer, self.slot, self.request_id = job_id, cursor, viewer, slot, request_id

    def __aiter__(self):
        return self._events()

    def iterate_sync(self):
        """The same events for a WSGI server (the stream holds one of its threads while open)."""
        try:
            yield from iterate_sync(self.__aiter__)
        finally:
            self.slot.release()

    async def aclose(self, *, client_gone: bool = False) -> None:
        if client_gone:
            # The request's log context is gone once the view returned: the line names the request id.
            logger.info(
                "event stream: the client went away", extra={"request_id": self.request_id, "job_id": self.job_id}
            )
        await self.slot.arelease()

    async def _events(self):
        try:
            async for text in job_event_stream(job_id=self.job_id, cursor=self.cursor, viewer=self.viewer):
                yield text
        except Exception:
            logger.exception("event stream failed", extra={"request_id": self.request_id, "job_id": self.job_id})
            raise


async def job_event_stream(*, job_id: str, cursor: str = "0", viewer=None) -> AsyncIterator[str]:
    """The events of one job from `cursor` on: entries and record reads come from the process's hub."""
    hub = output_hub()
    started = last_sent = time.monotonic()
    heartbeat = max(settings.JOB_EVENTS_HEARTBEAT, 0.5)
    deadline = started + settings.JOB_EVENTS_MAX_SECONDS
    yield "retry: 2000\n\n"  # EventSource waits this long (ms) before reconnecting
    watch = hub.watch(job_id=job_id, cursor=cursor, viewer=viewer)
    sent_state = None
    seen_read = 0  # the last record read acted on (0: none yet; nothing is sent before the first state)
    segment_read = None  # the read count when a fresh read was asked for the segment at the head
    try:
        while True:
            if watch.job_read > seen_read:
                seen_read = watch.job_read
                job = watch.job
                if job is None or job.status in FINAL_STATUSES:
                    # The job closed its log before it finished: drain what is left, then the final state.
                    hub.unwatch(watch)
                    for entry in await hub.read_after(job_id=job_id, after=cursor):
                        yield _entry_event(entry)
                        cursor = entry["id"]
                    yield _event("state", _state(job, viewer), cursor)
                    return
                state = _state(job, viewer)
                if state != sent_state:
                    yield _event("state", state, cursor)
                    sent_state, last_sent = state, time.monotonic()
            batch: list = []  # what is buffered goes out in one write (a busy process sends fewer, larger ones)
            while seen_read and watch.entries:
                if watch.entries[0]["type"] == SEGMENT:
                    # A new attempt began: announce its state (read afresh) before its first chunk.
                    if batch:
                        break
                    if segment_read is None:
                        segment_read = watch.job_read
                        hub.want_state(watch)
                    if seen_read <= segment_read:
                        break
                    segment_read = None
                entry = watch.entries.popleft()
                batch.append(_entry_event(entry))
                cursor = entry["id"]
            if batch:
                yield "".join(batch)
                last_sent = time.monotonic()
                continue
            if hub.draining.is_set():
                yield ": server restarting; reconnect with Last-Event-ID\n\n"
                return
            if watch.overflowed:
                yield ": client too slow; reconnect with Last-Event-ID\n\n"
                return
            now = time.monotonic()
            if now >= deadline:
                yield ": stream time limit reached; reconnect with Last-Event-ID\n\n"
                return
            if now - last_sent >= heartbeat:
                yield ": keep-alive\n\n"  # keeps proxies from timing out the connection
                last_sent = now
                continue
            watch.wake.clear()
            if watch.job_read > seen_read or (seen_read and watch.entries and segment_read is None):
                continue  # something arrived while we were sending
            watch.due = min(deadline, last_sent + heartbeat)  # the hub's ticker wakes it then
            await watch.wake.wait()
    finally:
        hub.unwatch(watch)
