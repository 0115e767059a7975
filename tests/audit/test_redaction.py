import pytest

from audit.jobs import LogEventJob
from audit.redaction import REDACTED, DetailsError, redact, text_digest


def test_secret_keys_are_redacted_at_any_depth_and_case():
    details = {
        "Password": "hunter2",
        "user": {"API_KEY": "abc", "profile": {"sessionToken": "t1", "name": "ann"}},
        "headers": [{"Authorization": "whatever"}, {"Cookie": "sid=1"}],
        "client_secret": "x",
        "note": "fine",
    }
    assert redact(details) == {
        "Password": REDACTED,
        "user": {"API_KEY": REDACTED, "profile": {"sessionToken": REDACTED, "name": "ann"}},
        "headers": [{"Authorization": REDACTED}, {"Cookie": REDACTED}],
        "client_secret": REDACTED,
        "note": "fine",
    }


@pytest.mark.parametrize(
    "value",
    [
        "Bearer abcdefghijklmnop",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
        "key was sk-abcdefghijklmnopqrst in the log",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "AKIAIOSFODNN7EXAMPLE",
    ],
)
def test_secret_looking_values_are_redacted_under_any_key(value):
    assert redact({"note": value, "list": [value]}) == {"note": REDACTED, "list": [REDACTED]}


def test_ordinary_values_and_token_counts_are_kept():
    details = {"prompt_tokens": 12, "completion_tokens": 3, "skip": "sk-short", "text": "bearer of news", "n": 2.5}
    assert redact(details) == details


def test_prompts_are_kept_as_length_and_hash():
    out = redact({"prompt": "tell me a secret"})
    assert out == {"prompt": text_digest("tell me a secret")}
    assert out["prompt"]["length"] == 16 and "tell" not in str(out)


def test_storable_form():
    assert redact({"a": "x\x00y", "f": 3.0, "big": 1e16}) == {"a": "xy", "f": 3, "big": 10**16}
    with pytest.raises(DetailsError):
        redact({"n": float("nan")})


def test_job_payload_is_redacted_and_rejects_unknown_fields():
    clean = LogEventJob.validate({"action": "login", "details": {"token": "t"}, "errorMessage": "Bearer abcdefghijk"})
    assert clean["details"] == {"token": REDACTED} and clean["errorMessage"] == REDACTED
    assert clean["eventId"] and clean["occurredAt"]
    from rest_framework.exceptions import ValidationError

    with pytest.raises(ValidationError) as err:
        LogEventJob.validate({"action": "x", "colour": "red"})
    assert "colour" in err.value.detail


@pytest.mark.parametrize(
    "value",
    [
        "Token 0123456789abcdef0123456789abcdef01234567",  # this API's own Authorization scheme
        "token 0123456789ABCDEF0123456789abcdef01234567",
        "0123456789abcdef0123456789abcdef01234567",  # a bare API token
        "client used key=0123456789abcdef0123456789abcdef01234567 today",
        "could not connect to postgres://slimy:hunter22@db.internal:5432/slimy",
        "retry with password=hunter22",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
        "glpat-abcdefghijklmnopqrstuvwx",
    ],
)
def test_more_secret_looking_values_are_redacted(value):
    assert redact({"note": value, "list": [value]}) == {"note": REDACTED, "list": [REDACTED]}


@pytest.mark.parametrize(
    "value",
    [
        "f" * 64,  # a sha256 (e.g. a prompt digest) is not a token
        "commit 0123456",
        "see https://example.com/a:b",
        "The password was wrong",
        "token: ab",
        "tokens used: 12",
    ],
)
def test_hashes_and_ordinary_text_are_kept(value):
    assert redact({"note": value}) == {"note": value}


@pytest.mark.parametrize(
    "key", ["userPrompt", "systemPrompt", "user_prompt", "PROMPT", "promptText", "question", "lastReply", "completion"]
)
def test_prompt_like_keys_are_kept_as_length_and_hash(key):
    assert redact({key: "tell me a secret"}) == {key: text_digest("tell me a secret")}


def test_lists_of_prompts_are_hashed_and_token_counts_kept():
    out = redact({"prompts": ["a", "bb"], "prompt_tokens": 4, "completion_tokens": 2, "message": "kept"})
    assert out == {
        "prompts": [text_digest("a"), text_digest("bb")],
        "prompt_tokens": 4,
        "completion_tokens": 2,
        "message": "kept",
    }


def test_error_messages_of_events_are_redacted_too():
    clean = LogEventJob.validate({"action": "x", "errorMessage": "auth Token 0123456789abcdef0123456789abcdef01234567"})
    assert clean["errorMessage"] == REDACTED


def test_a_prompt_digest_is_kept_as_it_is():
    details = {"promptSha256": "ab" * 32, "promptLength": 5, "prompt_hash": "cd" * 32}
    assert redact(details) == details
