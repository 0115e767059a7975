"""API token format: what a token looks like and how it is stored (a SHA-256 digest, never the text).

A token is `slimy_` + 64 hex characters (256 random bits). The prefix lets people, secret scanners
and the audit redaction (audit.redaction) recognise one. The database keeps only `token_digest(token)`:
SHA-256 and no slow KDF, because the token is random and long — no dictionary to guess from, so the
hash only has to be one-way, and it keeps authentication at one indexed look-up per request.
"""

from __future__ import annotations

import hashlib
import re
import secrets

TOKEN_PREFIX = "slimy_"
TOKEN_PATTERN = re.compile(re.escape(TOKEN_PREFIX) + r"[0-9a-f]{64}")


def token_generate() -> str:
    return TOKEN_PREFIX + secrets.token_hex(32)


def token_digest(token: str) -> str:
    # surrogatepass: a header may carry anything; it must hash (and then fail to match), not raise.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
