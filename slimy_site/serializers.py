"""Serializers every API module shares: the strict input base and the error shape."""

from collections.abc import Mapping
from typing import Any

from django.core.validators import RegexValidator
from rest_framework import serializers

UNKNOWN_FIELD = "Unknown field."

# JSON types a field of each kind takes in a JSON body (first match wins: subclasses come first).
# DRF itself coerces (`0` becomes "0" for a CharField, "1" becomes 1, "yes" becomes True); the
# schema promises types, so a body whose values have other types is refused instead.
_JSON_TYPES = (
    (serializers.MultipleChoiceField, (list,), "a list"),
    (serializers.BooleanField, (bool,), "a boolean"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.DecimalField, (int, float, str), "a number"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.CharField, (str,), "a string"),
    (serializers.UUIDField, (str,), "a string"),
    (serializers.DateTimeField, (str,), "a string"),
    (serializers.DateField, (str,), "a string"),
    (serializers.DictField, (dict,), "an object"),
    (serializers.ListField, (list,), "a list"),
    (serializers.Serializer, (dict,), "an object"),
    (serializers.ListSerializer, (list,), "a list"),
)


def json_type_errors(fields, data) -> dict:
    """`{field: [message]}` for each value in `data` whose JSON type the field does not take."""
    errors: dict[str, list[str]] = {}
    if not isinstance(data, Mapping):
        return errors
    for name, field in fields.items():
        if field.read_only or name not in data or data[name] is None:
            continue  # absence and null are the field's own business (required / allow_null)
        value = data[name]
        for kind, types, label in _JSON_TYPES:
            if isinstance(field, kind):
                wrong = not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
                if wrong:
                    errors[name] = [f"Must be {label}."]
                break
    return errors


# A character that is not white space, listed explicitly so that Python and the schema's ECMA-262
# regexes agree on it: the union of what `str.isspace()` and ECMA's `\s` call white space.
NON_BLANK_PATTERN = (
    r"[^\t\n\v\f\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    r"\ufeff]"
)


class NonBlankCharField(serializers.CharField):
    """Text with at least one visible character; the schema states it as a `pattern`.

    DRF's own blank check strips with Python's notion of white space, which the schema cannot state;
    this field checks the documented pattern instead, then strips (unless `trim_whitespace=False`).
    """

    def __init__(self, **kwargs):
        self.strip_value = kwargs.pop("trim_whitespace", True)
        super().__init__(trim_whitespace=False, **kwargs)
        self.validators.append(RegexValidator(NON_BLANK_PATTERN, message="This field may not be blank."))

    def run_validation(self, data=serializers.empty):
        value = super().run_validation(data)
        return value.strip() if self.strip_value and isinstance(value, str) else value


class TypedSerializer(serializers.Serializer):
    """A JSON-body serializer that takes each value only in the JSON type its schema declares."""

    json_types = True  # False for query strings, where every value is text

    def to_internal_value(self, data):
        errors = json_type_errors(self.fields, data) if self.json_types else {}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not errors or not isinstance(exc.detail, dict):
                raise
            raise serializers.ValidationError({**exc.detail, **errors}) from None
        if errors:
            raise serializers.ValidationError(errors)
        return value


class StrictSerializer(TypedSerializer):
    """An input serializer that refuses keys it does not declare (400, one message per key).

    Read-only fields count as unknown: a client can never set them. Nested StrictSerializers are
    strict too, so job options (attempts, timeout, queue, job id) cannot be smuggled in anywhere.
    Values must have their declared JSON type (`{"title": 0}` is a 400); see StrictQuerySerializer.
    """

    def to_internal_value(self, data):
        unknown = []
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(key) for key in data if key not in writable)
        errors: dict[str, Any] = {}
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


class StrictQuerySerializer(StrictSerializer):
    """Query parameters: unknown names refused; values are text, converted by their fields."""

    json_types = False


class EmptyInputSerializer(StrictSerializer):
    """A body that must be empty or `{}` (action endpoints such as retry and cancel)."""


def validate_input(serializer_class, data, **kwargs):
    """Validated data of a strict input serializer.

    DRF gives `{}` for a request without a body; `None` is a JSON `null` body, which is no object: 400.
    """
    serializer = serializer_class(data=data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ErrorSerializer(serializers.Serializer):
    ok = serializers.BooleanField(default=False, help_text="Always false.")
    error = serializers.CharField(help_text="Machine-readable error code.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.JSONField(
        required=False, help_text="Field errors (field → messages) or other structured detail."
    )
