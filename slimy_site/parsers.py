"""The API's JSON parser: DRF's, plus the inputs that would otherwise surface as 500s.

Deeply nested documents exhaust Python's recursion limit, and PostgreSQL's jsonb/text refuse NUL
characters, unpaired surrogates and non-finite numbers (1e999); all are refused here as `malformed_request` (400).
"""

import codecs
import json
import math

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.settings import api_settings
from rest_framework.utils.json import strict_constant

MAX_DEPTH = 32


class SafeJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", "utf-8")
        try:
            text = codecs.getreader(encoding)(stream).read()
            data = json.loads(text, parse_constant=strict_constant if api_settings.STRICT_JSON else None)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        problem = _problem(data)
        if problem:
            raise ParseError(f"JSON parse error - {problem}")
        return data


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
