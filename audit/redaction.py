"""Privacy and canonical form of event details, applied before an event is enqueued or stored.

- Values under secret-looking keys (password, token, secret, authorization, api_key, cookie, ...) and
  values that look like bearer tokens, JWTs or provider API keys become "[redacted]", at any depth.
- Chat prompts (`prompt`, `userPrompt`, `systemPrompt`, lists of them, and keys ending in `question`,
  `reply`, `completion`, `utterance`) are kept as length + sha256, never as text (`text_digest`).
- `Token <key>` (this API's scheme), bare 40-hex keys, `password=...` in text, credentials in URLs
  and PEM private keys are secrets wherever they appear.
- Everything is made storable exactly as hashed: NUL characters removed (PostgreSQL rejects them),
  integral floats turned into ints (jsonb does not keep `1e+16` as a float), non-finite floats refused.
"""

from __future__ import annotations

import hashlib
import math
import re

from slimy_site.tokens import TOKEN_PATTERN

REDACTED = "[redacted]"
MAX_DEPTH = 20

_SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|pwd|token|secret|authori[sz]ation|api[-_]?key|apikey|cookie|session[-_]?key|"
    r"private[-_]?key|credential|access[-_]?key|client[-_]?secret|signature",
    re.IGNORECASE,
)
_SECRET_VALUE = re.compile(
    r"(?:\bbearer\s+\S{8,})"  # Authorization header values
    r"|(?:\bbasic\s+[A-Za-z0-9+/=]{8,})"
    r"|(?:\btoken\s+[A-Za-z0-9._~+/=-]{20,})"  # `Token <key>`: this API's own scheme
    r"|(?:(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f]))"  # a bare API token (40 hex), even inside text
    r"|(?:\b(?:pass(?:word|wd)?|pwd|secret|token|api[-_]?key)\s*[=:]\s*[^\s&;,]{4,})"  # `password=...` in text
    r"|(?:\b[a-z][a-z0-9+.-]*://[^\s/:@]+:[^\s/@]+@)"  # credentials in a URL (postgres://user:pw@host)
    r"|(?:-----BEGIN [A-Z ]*PRIVATE KEY-----)"
    r"|(?:\bglpat-[A-Za-z0-9_-]{20,})"  # GitLab
    r"|(?:\bya29\.[A-Za-z0-9_-]{20,})"  # Google OAuth access token
    r"|(?:\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)"  # JWT
    r"|(?:\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,})"  # OpenAI-style keys (sk-..., sk-proj-...)
    r"|(?:\bsk_(?:live|test)_[A-Za-z0-9]{16,})"  # Stripe
    r"|(?:\bxox[abprs]-[A-Za-z0-9-]{10,})"  # Slack
    r"|(?:\bgh[pousr]_[A-Za-z0-9]{30,})"  # GitHub
    r"|(?:\bAKIA[0-9A-Z]{16}\b)"  # AWS access key id
    r"|(?:\bAIza[0-9A-Za-z_-]{35})",  # Google API key
    re.IGNORECASE,
)
# Counters named like secrets ("prompt_tokens", "max_tokens") are kept when they are numbers.
_COUNT_KEY = re.compile(
    r"(^|[-_])(prompt|completion|total|max|input|output|cached|reasoning)[-_]?tokens$", re.IGNORECASE
)
# Keys whose text is personal content (what a user asked or was answered): kept as length + hash.
# `prompt` anywhere in the name (userPrompt, system_prompt, prompts), or a name ending in one of these.
_DIGEST_KEY = re.compile(r"prompt|(^|[-_]|[a-z](?=[A-Z]))(question|utterance|reply|completion)s?$", re.IGNORECASE)


class DetailsError(ValueError):
    """Details that cannot be stored (too deep, non-finite numbers)."""


def is_secret_key(key: str, value=None) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and _COUNT_KEY.search(key):
        return False
    return bool(_SECRET_KEY.search(key))


# Facts about a prompt that are already safe (`promptSha256`, `prompt_hash`): kept as they are.
_ALREADY_DIGEST_KEY = re.compile(r"(sha\d*|hash|digest)$", re.IGNORECASE)


def is_digest_key(key: str) -> bool:
    return bool(_DIGEST_KEY.search(key)) and not _ALREADY_DIGEST_KEY.search(key)


def _digest_texts(value, *, _depth: int):
    """Every string in `value` as its digest (a list of prompts too), the rest redacted as usual."""
    if isinstance(value, str):
        return text_digest(value)
    if _depth > MAX_DEPTH:
        raise DetailsError(f"Details are nested deeper than {MAX_DEPTH} levels.")
    if isinstance(value, dict):
        return {clean_text(str(k)): _digest_texts(v, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_digest_texts(v, _depth=_depth + 1) for v in value]
    return redact(value, _depth=_depth)


def looks_secret(value: str) -> bool:
    return bool(_SECRET_VALUE.search(value) or TOKEN_PATTERN.search(value))  # + Slimy's own API tokens


def text_digest(text: str) -> dict:
    """What the audit log keeps of a chat prompt: its length and sha256, never its text."""
    return {"length": len(text), "sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()}


def clean_text(value: str, max_length: int | None = None) -> str:
    value = value.replace("\x00", "")
    return value[:max_length] if max_length is not None else value


def redact(value, *, _depth: int = 0):
    """A redacted, storable copy of `value` (dicts, lists, strings, numbers, booleans, None)."""
    if _depth > MAX_DEPTH:
        raise DetailsError(f"Details are nested deeper than {MAX_DEPTH} levels.")
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            key = clean_text(str(key))
            if is_secret_key(key, item) and item not in (None, ""):
                out[key] = REDACTED
            elif is_digest_key(key) and isinstance(item, (str, list, tuple, dict)):
                out[key] = _digest_texts(item, _depth=_depth + 1)
            else:
                out[key] = redact(item, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [redact(item, _depth=_depth + 1) for item in value]
    if isinstance(value, str):
        return REDACTED if looks_secret(value) else clean_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DetailsError("Details may not contain NaN or infinite numbers.")
        return int(value) if value.is_integer() else value
    # Anything else (UUID, datetime, Decimal): its text form, redacted like any string.
    return redact(str(value), _depth=_depth)
