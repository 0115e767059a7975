"""event_clean (plain code) against the DRF serializer it replaced: same results, same field errors."""

import datetime as dt
import json
import uuid

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone
from rest_framework import serializers

from audit.events import MAX_DETAILS_CHARS, event_clean, events_clean, normalize_ip
from audit.jobs import LogEventJob, LogEventsBulkJob
from audit.redaction import DetailsError, clean_text, redact

_LIMITS = {"actorLabel": 150, "userAgent": 512, "sessionId": 128, "requestId": 64, "errorMessage": 4000}


class ReferencePayload(serializers.Serializer):
    """The serializer audit events were validated with before event_clean (the specification)."""

    eventId = serializers.UUIDField(required=False)
    occurredAt = serializers.DateTimeField(required=False)
    action = serializers.CharField(max_length=100)
    resourceType = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    resourceId = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    actorId = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    actorLabel = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    details = serializers.DictField(required=False, default=dict)
    ip = serializers.CharField(required=False, allow_null=True, allow_blank=True, default=None)
    userAgent = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    sessionId = serializers.CharField(required=False, allow_blank=True, default="")
    requestId = serializers.CharField(required=False, allow_blank=True, default="")
    success = serializers.BooleanField(required=False, default=True)
    errorMessage = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)

    def validate_action(self, value):
        return clean_text(value.strip())

    def validate_ip(self, value):
        try:
            return normalize_ip(value)
        except ValueError:
            raise serializers.ValidationError("Not an IP address.") from None

    def validate_details(self, value):
        try:
            details = redact(value)
        except DetailsError as exc:
            raise serializers.ValidationError(str(exc)) from None
        if len(str(details)) > MAX_DETAILS_CHARS:
            raise serializers.ValidationError(f"At most {MAX_DETAILS_CHARS} characters of details.")
        return details

    def validate(self, attrs):
        attrs.setdefault("eventId", uuid.uuid4())
        attrs.setdefault("occurredAt", timezone.now())
        for name, limit in _LIMITS.items():
            attrs[name] = clean_text(attrs.get(name) or "", limit)
        for name in ("resourceType", "resourceId"):
            attrs[name] = clean_text(attrs[name])
        if attrs["errorMessage"]:
            attrs["errorMessage"] = redact(attrs["errorMessage"])
        return attrs


def _reference(data):
    serializer = ReferencePayload(data=data)
    serializer.is_valid(raise_exception=True)
    return json.loads(json.dumps(serializer.validated_data, cls=DjangoJSONEncoder))


BASE = {"eventId": "6f1c1f1e-8a8b-4c5d-9e0f-112233445566", "occurredAt": "2026-03-01T10:00:00.123456+02:00"}
CASES = [
    {"action": "login"},
    {"action": "  padded  ", "resourceType": " job ", "resourceId": 42, "actorId": "7", "actorLabel": "  x "},
    {"action": "a", "actorId": 3.0, "success": "false", "ip": "::ffff:10.0.0.1", "userAgent": " UA "},
    {
        "action": "a",
        "success": 0,
        "ip": "",
        "sessionId": " s ",
        "requestId": "r" * 80,
        "errorMessage": "Bearer abcdefghijk",
    },
    {"action": "a", "details": {"password": "p", "nested": {"token": "t", "n": 1.0, "prompt": "hi"}, 3: [1, "x"]}},
    {"action": "a", "occurredAt": "2026-03-01T10:00:00", "eventId": "6F1C1F1E8A8B4C5D9E0F112233445566"},
    {"action": "a", "userAgent": "u" * 600, "actorLabel": "l" * 200, "ip": None, "actorId": None},
    # invalid
    {},
    {"action": ""},
    {"action": "   "},
    {"action": None},
    {"action": "x" * 101},
    {"action": ["x"]},
    {"action": True},
    {"action": "x", "colour": 1},
    {"action": "x", "ip": "999.1.1.1"},
    {"action": "x", "occurredAt": "yesterday"},
    {"action": "x", "occurredAt": 5},
    {"action": "x", "details": ["not", "a", "dict"]},
    {"action": "x", "details": None},
    {"action": "x", "details": {"n": float("nan")}},
    {"action": "x", "eventId": "nope"},
    {"action": "x", "actorId": 0},
    {"action": "x", "actorId": "abc"},
    {"action": "x", "actorId": 1.5},
    {"action": "x", "actorId": True},
    {"action": "x", "success": "maybe"},
    {"action": "x", "success": None},
    {"action": "x", "resourceId": "r" * 256},
    {"action": "x\x00y"},
    {"action": "x", "resourceType": {"a": 1}},
    {"action": "x", "sessionId": None},
    {"action": "", "ip": "bad", "details": 1},
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_event_clean_agrees_with_the_serializer(case):
    data = dict(BASE, **case) if "eventId" not in case and "occurredAt" not in case else dict(case)
    try:
        expected = _reference(data)
    except serializers.ValidationError as exc:
        with pytest.raises(serializers.ValidationError) as caught:
            event_clean(data)
        # Same fields, same messages (the API's error details carry the messages, not DRF's codes).
        assert json.loads(json.dumps(caught.value.detail)) == json.loads(json.dumps(exc.detail))
        return
    got = event_clean(data)
    if "eventId" not in data:
        assert uuid.UUID(got.pop("eventId")) and expected.pop("eventId")
    if "occurredAt" not in data:
        assert got.pop("occurredAt") and expected.pop("occurredAt")
    assert got == expected


def test_defaults_are_a_fresh_id_and_now():
    first, second = event_clean({"action": "a"}), event_clean({"action": "a"})
    assert first["eventId"] != second["eventId"]
    when = dt.datetime.fromisoformat(first["occurredAt"].replace("Z", "+00:00"))
    assert abs((timezone.now() - when).total_seconds()) < 60


def test_job_validation_uses_it_and_names_bad_events_by_position():
    assert LogEventJob.validate({"action": "a", "details": {"secret": "s"}})["details"] == {"secret": "[redacted]"}
    with pytest.raises(serializers.ValidationError) as caught:
        LogEventJob.validate(["not", "an", "object"])
    assert "payload" in caught.value.detail
    with pytest.raises(serializers.ValidationError) as caught:
        LogEventsBulkJob.validate({"events": [{"action": "ok"}, {"nope": 1}, {"action": ""}]})
    assert set(caught.value.detail["events"]) == {1, 2}
    for bad in ({}, {"events": []}, {"events": "x"}, {"events": [{"action": "a"}] * 1001}, {"events": [], "x": 1}):
        with pytest.raises(serializers.ValidationError):
            events_clean(bad)
    assert len(LogEventsBulkJob.validate({"events": [{"action": "a"}] * 3})["events"]) == 3
