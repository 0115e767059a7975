"""Page cursors built from numbers only, so that every value matching the documented pattern decodes.

A cursor is a position in an ordering, not a secret: clients get it from `next`/`nextCursor`. Made of
digits, it has a pattern the OpenAPI schema can state exactly; a value outside the pattern is a
400 `validation_error`, and a value inside it (however it was made) is a position that PostgreSQL can
compare — instants beyond the calendar are clamped to its ends, never an overflow or a 500.
"""

from __future__ import annotations

import datetime as dt

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MIN = dt.datetime.min.replace(tzinfo=dt.UTC) + dt.timedelta(days=2)  # any zone shift stays in range
_MAX = dt.datetime.max.replace(tzinfo=dt.UTC) - dt.timedelta(days=2)
_MIN_MICROS = (_MIN - _EPOCH) // dt.timedelta(microseconds=1)
_MAX_MICROS = (_MAX - _EPOCH) // dt.timedelta(microseconds=1)

# An instant: microseconds since 1970-01-01 UTC (negative before), at most 18 digits.
INSTANT_PATTERN = r"-?[0-9]{1,18}"


def instant_encode(value: dt.datetime) -> str:
    return str((value - _EPOCH) // dt.timedelta(microseconds=1))


def instant_decode(text: str) -> dt.datetime:
    """The instant of `text` (digits, validated by the caller's pattern), clamped to the calendar."""
    micros = min(max(int(text), _MIN_MICROS), _MAX_MICROS)
    return _EPOCH + dt.timedelta(microseconds=micros)
