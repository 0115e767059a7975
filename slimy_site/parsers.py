"""The API's JSON parser: DRF's, plus the inputs that would otherwise surface as 500s.

Deeply nested documents exhaust Python's recursion limit, and PostgreSQL's jsonb/text refuse NUL
characters, unpaired surrogates and non-finite numbers (1e999); all are refused here as `malformed_request` (400).

The body is decoded as UTF-8 only (RFC 8259 §8.1). The `charset` parameter is never handed to `codecs`:
Python's codec registry also holds bz2/zlib/hex/rot13 "codecs", through which a small body could expand
to gigabytes after the size limit has passed. Any other charset is `unsupported_media_type` (415), and
the decoded text can never be longer than the bytes read, which the body limit already bounds.
"""

import json
import math

from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings
from rest_framework.utils.json import strict_constant

MAX_DEPTH = 32

# Spellings of UTF-8 (and its subset ASCII) a client may send; compared case-insensitively.
ACCEPTED_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        charset = _charset(media_type)
        if charset is not None and charset not in ACCEPTED_CHARSETS:
            raise UnsupportedMediaType(media_type, detail="JSON bodies must be UTF-8 (charset=utf-8).")
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("JSON parse error - the body is not valid UTF-8.") from None
        try:
            data = json.loads(text, parse_constant=strict_constant if api_settings.STRICT_JSON else None)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        problem = _problem(data)
        if problem:
            raise ParseError(f"JSON parse error - {problem}")
        return data


def _charset(media_type) -> str | None:
    """The lower-cased `charset` parameter of a Content-Type, or None when absent."""
    for param in (media_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _problem(value, depth=0) -> str | None:
    """Why `value` cannot be stored, walking iteratively deep enough to find it (None when fine)."""
    stack = [(value, depth)]
    while stack:
        item, level = stack.pop()
        if level > MAX_DEPTH:
            return f"the document is nested deeper than {MAX_DEPTH} levels."
        if isinstance(item, str):
            if _bad_text(item):
                return "strings may not contain NUL characters or unpaired surrogates."
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite."
        elif isinstance(item, dict):
            for key, child in item.items():
                if _bad_text(key):
                    return "strings may not contain NUL characters or unpaired surrogates."
                stack.append((child, level + 1))
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return None


def _bad_text(text: str) -> bool:
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
