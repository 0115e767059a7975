"""The shape of one audit event: validated, redacted plain data (the log_event job payload).

`event_clean` is the one validator every path uses (`audit_event_record`, the API, the job payloads,
the worker's re-validation): plain code with the rules and messages of the DRF fields `EventPayload`
declares, several times cheaper per event than running those fields (the worker re-validates every
event it writes). `EventPayload` documents the shape for the API schema; tests/audit/test_events.py
checks `event_clean` against a serializer built from the same fields.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
import uuid
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.redaction import DetailsError, clean_text, redact
from slimy_site.serializers import NonBlankCharField, TypedSerializer, json_type_errors

MAX_EVENTS = 1000
MAX_DETAILS_CHARS = 32_000

_LIMITS = {"actorLabel": 150, "userAgent": 512, "sessionId": 128, "requestId": 64, "errorMessage": 4000}
_MAX_LENGTH = {"action": 100, "resourceType": 100, "resourceId": 255}
_FIELD_SET = frozenset(
    (
        "eventId",
        "occurredAt",
        "action",
        "resourceType",
        "resourceId",
        "actorId",
        "actorLabel",
        "details",
        "ip",
        "userAgent",
        "sessionId",
        "requestId",
        "success",
        "errorMessage",
    )
)
_NULLABLE = frozenset({"actorId", "ip"})
_TRUE = frozenset({"t", "T", "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "1", 1})
_FALSE = frozenset({"f", "F", "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", "0", 0})
_SURROGATE = re.compile("[\ud800-\udfff]")
_DECIMAL_TAIL = re.compile(r"\.0*\s*$")


def normalize_ip(value: str | None) -> str | None:
    """The address as PostgreSQL's inet prints it back (so the stored row hashes as written)."""
    if not value:
        return None
    address = ipaddress.ip_address(value.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.compressed


@extend_schema_field(
    {"type": "string", "nullable": True, "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}, {"maxLength": 0}]}
)
class IPField(serializers.CharField):
    """An IPv4 or IPv6 address, or empty; checked by EventPayload.validate_ip."""


def iso(value: dt.datetime) -> str:
    """A timestamp as job payloads carry it (DjangoJSONEncoder's form: milliseconds, `Z` for UTC)."""
    text = value.isoformat()
    if value.microsecond:
        text = text[:23] + text[26:]
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class _Invalid(Exception):
    pass


def _text(value, *, strip: bool, allow_blank: bool, max_length: int | None = None) -> str:
    """A DRF CharField's rules: no null, no bool/dict/list, numbers as text, no NUL or surrogates."""
    if value is None:
        raise _Invalid("This field may not be null.")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Invalid("Not a valid string.")
    text = str(value)
    if strip:
        text = text.strip()
    if text == "":
        if not allow_blank:
            raise _Invalid("This field may not be blank.")
        return ""
    if max_length is not None and len(text) > max_length:
        raise _Invalid(f"Ensure this field has no more than {max_length} characters.")
    if "\x00" in text:
        raise _Invalid("Null characters are not allowed.")
    match = _SURROGATE.search(text)
    if match:
        raise _Invalid(f"Surrogate characters are not allowed: U+{ord(match.group()):X}.")
    return text


def _event_id(value) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise _Invalid("Must be a valid UUID.")
    try:
        return str(uuid.UUID(int=value) if isinstance(value, int) else uuid.UUID(value))
    except (ValueError, AttributeError):
        raise _Invalid("Must be a valid UUID.") from None


def _occurred(value) -> str:
    when: dt.datetime | None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = parse_datetime(value)
        except ValueError:
            when = None
        if when is None:
            raise _Invalid(
                "Datetime has wrong format. Use one of these formats instead: "
                "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
            )
    else:
        raise _Invalid(
            "Datetime has wrong format. Use one of these formats instead: "
            "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."
        )
    when = timezone.make_aware(when, dt.UTC) if timezone.is_naive(when) else when.astimezone(dt.UTC)
    return iso(when)


def _actor_id(value):
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid("A valid integer is required.")
    if isinstance(value, int):
        number = value
    else:
        text = str(value)
        if len(text) > 1000:
            raise _Invalid("String value too large.")
        try:
            number = int(_DECIMAL_TAIL.sub("", text))
        except ValueError:
            raise _Invalid("A valid integer is required.") from None
    if number < 1:
        raise _Invalid("Ensure this value is greater than or equal to 1.")
    return number


def _boolean(value) -> bool:
    try:
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
    except TypeError:  # unhashable
        pass
    raise _Invalid("Must be a valid boolean.")


def _details(value) -> dict:
    if not isinstance(value, dict):
        raise _Invalid(f'Expected a dictionary of items but got type "{type(value).__name__}".')
    try:
        details = redact(value)
    except DetailsError as exc:
        raise _Invalid(str(exc)) from None
    if len(str(details)) > MAX_DETAILS_CHARS:
        raise _Invalid(f"At most {MAX_DETAILS_CHARS} characters of details.")
    return details


def _ip(value):
    if value is None:
        return None
    text = _text(value, strip=False, allow_blank=True)
    if text != text.strip():  # the schema says ipv4/ipv6: padded text is not an address
        raise _Invalid("Not an IP address.")
    try:
        return normalize_ip(text)
    except ValueError:
        raise _Invalid("Not an IP address.") from None


def _action(value) -> str:
    return clean_text(_text(value, strip=True, allow_blank=False, max_length=100))


def _text_field(name: str, strip: bool):
    limit, cut = _MAX_LENGTH.get(name), _LIMITS.get(name)

    def convert(value) -> str:
        if value.__class__ is str and not (strip and value != value.strip()) and (limit is None or len(value) <= limit):
            # Already clean text (the common case, e.g. a payload validated when it was enqueued).
            if "\x00" not in value and not _SURROGATE.search(value):
                return value[:cut] if cut is not None else value
        return clean_text(_text(value, strip=strip, allow_blank=True, max_length=limit), cut)

    return convert


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> str:
    return iso(timezone.now())


# Field order = payload order: (name, converter, default factory or value; REQUIRED when required).
REQUIRED = object()
_CONVERT = (
    ("eventId", _event_id, _new_id),
    ("occurredAt", _occurred, _now),
    ("action", _action, REQUIRED),
    ("resourceType", _text_field("resourceType", True), ""),
    ("resourceId", _text_field("resourceId", True), ""),
    ("actorId", _actor_id, None),
    ("actorLabel", _text_field("actorLabel", False), ""),
    ("details", _details, dict),
    ("ip", _ip, None),
    ("userAgent", _text_field("userAgent", False), ""),
    ("sessionId", _text_field("sessionId", True), ""),
    ("requestId", _text_field("requestId", True), ""),
    ("success", _boolean, True),
    ("errorMessage", _text_field("errorMessage", False), ""),
)


def event_clean(data) -> dict:
    """One event, validated, redacted and storable: the log_event payload. Raises a DRF ValidationError
    naming each bad field (the API's 400 details), like the EventPayload serializer would."""
    if not isinstance(data, dict):
        raise serializers.ValidationError(
            {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {type(data).__name__}."]}
        )
    if not _FIELD_SET.issuperset(data):
        unknown = sorted(name for name in data if name not in _FIELD_SET)
        raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
    out: dict = {}
    errors: dict[str, list[str]] = {}
    for name, convert, default in _CONVERT:
        if name not in data:
            if default is REQUIRED:
                errors[name] = ["This field is required."]
            else:
                out[name] = default() if callable(default) else default
            continue
        value = data[name]
        if value is None and name not in _NULLABLE:
            errors[name] = ["This field may not be null."]
            continue
        try:
            out[name] = convert(value)
        except _Invalid as exc:
            errors[name] = [str(exc)]
    if errors:
        raise serializers.ValidationError(errors)
    if out["errorMessage"]:
        out["errorMessage"] = redact(out["errorMessage"])
    return out


def events_clean(data) -> dict:
    """The log_events_bulk payload `{"events": [...]}` (1 to MAX_EVENTS), each event as `event_clean`;
    errors name the position of each bad event."""
    if not isinstance(data, dict):
        raise serializers.ValidationError({"payload": ["Must be a JSON object."]})
    unknown = sorted(set(data) - {"events"})
    if unknown:
        raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
    events = data.get("events")
    if events is None:
        raise serializers.ValidationError({"events": ["This field is required."]})
    if not isinstance(events, list):
        raise serializers.ValidationError(
            {"events": [f'Expected a list of items but got type "{type(events).__name__}".']}
        )
    if not events:
        raise serializers.ValidationError({"events": ["Ensure this field has at least 1 elements."]})
    if len(events) > MAX_EVENTS:
        raise serializers.ValidationError({"events": [f"Ensure this field has no more than {MAX_EVENTS} elements."]})
    clean: list[dict] = []
    errors: dict[Any, Any] = {}
    for index, event in enumerate(events):
        try:
            clean.append(event_clean_json(event))
        except serializers.ValidationError as exc:
            errors[index] = exc.detail
    if errors:
        raise serializers.ValidationError({"events": errors})
    return {"events": clean}


class EventPayload(TypedSerializer):
    """The API schema of one event; validation is `event_clean` (after the JSON type check: over the API,
    strings must be strings, while Python callers of audit_event_record may pass ids as numbers)."""

    eventId = serializers.UUIDField(required=False, help_text="Producer-chosen id; a repeat is stored once.")
    occurredAt = serializers.DateTimeField(required=False, help_text="Defaults to the time it was accepted.")
    action = NonBlankCharField(max_length=100)
    resourceType = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    resourceId = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    actorId = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    actorLabel = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    details = serializers.DictField(required=False, default=dict)
    ip = IPField(required=False, allow_null=True, allow_blank=True, default=None, trim_whitespace=False)
    userAgent = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    sessionId = serializers.CharField(required=False, allow_blank=True, default="")
    requestId = serializers.CharField(required=False, allow_blank=True, default="")
    success = serializers.BooleanField(required=False, default=True)
    errorMessage = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)

    def run_validation(self, data=serializers.empty):
        return event_clean_json(data)


@functools.cache
def _event_fields():
    return EventPayload().fields


def event_clean_json(data) -> dict:
    """`event_clean` for a JSON document (the API, job payloads): each value must also have the JSON
    type the schema declares (`{"errorMessage": 0}` is a 400), where Python callers of
    audit_event_record may pass ids as numbers."""
    errors = json_type_errors(_event_fields(), data)
    if errors:
        raise serializers.ValidationError(errors)
    return event_clean(data)


class EventsPayload(serializers.Serializer):
    events = serializers.ListField(child=EventPayload(), min_length=1, max_length=MAX_EVENTS)

    def run_validation(self, data=serializers.empty):
        return events_clean(data)


# --- Payloads as job_enqueue stored them (validated once, when enqueued)

_STORED_TEXT = (
    "action",
    "resourceType",
    "resourceId",
    "actorLabel",
    "userAgent",
    "sessionId",
    "requestId",
    "errorMessage",
    "occurredAt",
)


def event_is_stored_form(event) -> bool:
    """Whether `event` has the exact shape `event_clean` returns: every field, each of its output type.

    The worker's check of a payload job_enqueue validated (and redacted) when it was enqueued: the
    content rules are not applied again, only what the writer relies on. An event of another shape (a
    payload from an older release, a record written by hand) goes through `event_clean` again.
    """
    if event.__class__ is not dict or event.keys() != _FIELD_SET:
        return False
    for name in _STORED_TEXT:
        if event[name].__class__ is not str:
            return False
    actor_id, ip, event_id = event["actorId"], event["ip"], event["eventId"]
    return (
        event["details"].__class__ is dict
        and event["success"].__class__ is bool
        and event_id.__class__ is str
        and len(event_id) == 36
        and (actor_id is None or actor_id.__class__ is int)
        and (ip is None or ip.__class__ is str)
    )


def event_stored(payload) -> dict:
    """A log_event payload as stored: taken as it is when in stored form, else validated again."""
    return payload if event_is_stored_form(payload) else event_clean_json(payload)


def events_stored(payload) -> dict:
    """A log_events_bulk payload as stored: each event as `event_stored`; errors as `events_clean`'s."""
    events = payload.get("events") if payload.__class__ is dict else None
    if events.__class__ is not list or not 0 < len(events) <= MAX_EVENTS or len(payload) != 1:
        return events_clean(payload)
    for event in events:
        if not event_is_stored_form(event):
            return events_clean(payload)
    return payload
