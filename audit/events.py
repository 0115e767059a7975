"""The shape of one audit event: validated, redacted plain data (the log_event job payload).

Used by the job payloads, the API and `audit_event_record`, so every path stores the same thing.
"""

from __future__ import annotations

import ipaddress
import uuid

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from audit.redaction import DetailsError, clean_text, redact
from slimy_site.serializers import NonBlankCharField, TypedSerializer

MAX_EVENTS = 1000
MAX_DETAILS_CHARS = 32_000

_LIMITS = {"actorLabel": 150, "userAgent": 512, "sessionId": 128, "requestId": 64, "errorMessage": 4000}


def normalize_ip(value: str | None) -> str | None:
    """The address as PostgreSQL's inet prints it back (so the stored row hashes as written)."""
    if not value:
        return None
    address = ipaddress.ip_address(value.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.compressed


@extend_schema_field({"type": "string", "nullable": True,
                      "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}, {"maxLength": 0}]})
class IPField(serializers.CharField):
    """An IPv4 or IPv6 address, or empty; checked by EventPayload.validate_ip."""


class EventPayload(TypedSerializer):
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

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)

    def validate_action(self, value):
        return clean_text(value.strip())

    def validate_ip(self, value):
        if value and value != value.strip():
            raise serializers.ValidationError("Not an IP address.")
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


class EventsPayload(serializers.Serializer):
    events = serializers.ListField(child=EventPayload(), min_length=1, max_length=MAX_EVENTS)
