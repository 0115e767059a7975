"""Serializers every API module shares: the strict input base and the error shape."""

from collections.abc import Mapping

from rest_framework import serializers

UNKNOWN_FIELD = "Unknown field."


class StrictSerializer(serializers.Serializer):
    """An input serializer that refuses keys it does not declare (400, one message per key).

    Read-only fields count as unknown: a client can never set them. Nested StrictSerializers are
    strict too, so job options (attempts, timeout, queue, job id) cannot be smuggled in anywhere.
    """

    def to_internal_value(self, data):
        unknown = []
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(key) for key in data if key not in writable)
        errors = {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not unknown or not isinstance(exc.detail, dict):
                raise
            errors = dict(exc.detail)
        # Report unknown keys together with the other field errors, so one round trip shows them all.
        errors.update({key: [UNKNOWN_FIELD] for key in unknown})
        if errors:
            raise serializers.ValidationError(errors)
        return value


class EmptyInputSerializer(StrictSerializer):
    """A body that must be empty or `{}` (action endpoints such as retry and cancel)."""


def validate_input(serializer_class, data, **kwargs):
    """Validated data of a strict input serializer; `None` (no body) counts as `{}`."""
    serializer = serializer_class(data={} if data is None else data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ErrorSerializer(serializers.Serializer):
    ok = serializers.BooleanField(default=False, help_text="Always false.")
    error = serializers.CharField(help_text="Machine-readable error code.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.JSONField(
        required=False, help_text="Field errors (field → messages) or other structured detail."
    )
