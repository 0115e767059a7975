"""The LLM provider: the only module that imports `openai`.

It streams one chat completion and translates every provider failure into `LLMError` with a
`transient` flag: timeouts, connection errors (including a stream cut mid-way), 408, 429 and 5xx
are transient; other 4xx are permanent. Retries, the circuit breaker and the fallback live in
`chat.bot`; the client does no retrying of its own (`max_retries=0`).

The stream is read with `openai.AsyncOpenAI` (the reply is a coroutine on the worker runtime's loop:
a reply in flight costs no thread). One client per event loop and configuration: an async client's
connection pool belongs to the loop that opened it.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx2  # the openai SDK's HTTP client (its connection limits)
import openai
from django.conf import settings

from chat.llm_network import AsyncioTransport

TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    # The response's headers (the provider's `x-ratelimit-*` tighten the shared budget).
    headers: dict = field(default_factory=dict, repr=False, compare=False)


class LLMError(Exception):
    def __init__(
        self,
        message: str,
        *,
        code: str,
        transient: bool,
        status: int | None = None,
        retry_after: float | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.headers = headers or {}
        self.code = code
        self.transient = transient
        self.status = status
        self.retry_after = retry_after


class LLMNotConfigured(Exception):
    """No API key: the caller answers with its fallback instead of calling anyone."""


# Several clients per loop, used in turn: a client's connection pool scans all its connections on every
# request it starts or ends (httpcore), so one pool holding a thousand streams costs O(n²) CPU; sixteen
# pools of ~60 cost a sixteenth of it. Each keeps few idle connections (16 × 8 at most).
CLIENTS_PER_LOOP = 16
KEEPALIVE_PER_CLIENT = 8

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[tuple, list[openai.AsyncOpenAI], list[int]]] = (
    weakref.WeakKeyDictionary()
)


def llm_configured() -> bool:
    return bool(settings.OPENAI_API_KEY)


def _client() -> openai.AsyncOpenAI:
    """One of the running loop's clients for the current configuration, in turn (built on use, never at import)."""
    if not settings.OPENAI_API_KEY:
        raise LLMNotConfigured("OPENAI_API_KEY is not set")
    loop = asyncio.get_running_loop()
    key = (settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL, settings.OPENAI_TIMEOUT)
    cached = _clients.get(loop)
    if cached is None or cached[0] != key:
        # Settings changed (tests): the stale clients' connections close with them. Each client is built
        # when its turn first comes.
        cached = _clients[loop] = (key, [], [0])
    key, clients, turn = cached
    index = turn[0]
    turn[0] = (index + 1) % CLIENTS_PER_LOOP
    if index == len(clients):
        clients.append(
            openai.AsyncOpenAI(
                api_key=settings.OPENAI_API_KEY,
                base_url=settings.OPENAI_BASE_URL or None,
                timeout=settings.OPENAI_TIMEOUT,
                max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(
                    # Reads and writes straight on the loop (chat.llm_network), not through anyio.
                    transport=AsyncioTransport(
                        limits=httpx2.Limits(
                            max_connections=openai.DEFAULT_CONNECTION_LIMITS.max_connections,
                            max_keepalive_connections=KEEPALIVE_PER_CLIENT,
                        )
                    ),
                ),
            )
        )
    return clients[index]


async def llm_stream_completion(
    *,
    messages: list[dict],
    on_delta: Callable[[str], object],
    model: str | None = None,
    max_tokens: int | None = None,
) -> Completion:
    """Stream a completion, calling (and awaiting, if async) `on_delta(text)` for every piece as it arrives.

    Exceptions raised by `on_delta` (a cancellation, say) propagate unchanged and close the stream.
    """
    model = model or settings.OPENAI_MODEL
    deadline = time.monotonic() + settings.OPENAI_STREAM_MAX_SECONDS
    parts: list[str] = []
    usage = None
    finish_reason = ""
    served_model = model
    headers: dict = {}
    try:
        # The SDK sends the request and maps its errors; the stream's events are read here as plain JSON
        # (the SDK builds a typed model of every chunk: most of a reply's CPU with a thousand in flight).
        # `messages` are already the protocol's plain dicts (role, content strings): they go in the SDK's
        # `extra_body`, which it sends as given, instead of `messages=`, which it first walks against the
        # TypedDict of every role (a union of seven, recursively: ~1 ms of CPU per reply at 1,000 in flight).
        async with _client().chat.completions.with_streaming_response.create(
            model=model,
            messages=(),  # replaced by extra_body's, merged over the typed parameters
            max_tokens=max_tokens or settings.OPENAI_MAX_TOKENS,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"messages": messages},
        ) as response:
            headers = _headers(response.http_response)
            async for chunk in _events(response.http_response):
                served_model = chunk.get("model") or served_model
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        parts.append(content)
                        answer = on_delta(content)
                        if inspect.isawaitable(answer):
                            await answer
                    if choice.get("finish_reason"):
                        finish_reason = choice["finish_reason"]
                if time.monotonic() > deadline:
                    raise LLMError(
                        "The reply took longer than OPENAI_STREAM_MAX_SECONDS.", code="llm_timeout", transient=True
                    )
    except (openai.APITimeoutError, httpx2.TimeoutException) as exc:
        raise LLMError("The LLM provider timed out.", code="llm_timeout", transient=True) from exc
    except (openai.APIConnectionError, httpx2.TransportError) as exc:
        raise LLMError(
            "The connection to the LLM provider failed.", code="llm_connection_error", transient=True
        ) from exc
    except openai.APIStatusError as exc:
        raise _status_error(exc) from exc
    except openai.APIError as exc:
        # An error event inside the stream: the provider broke down while answering.
        raise LLMError(
            f"The LLM provider reported an error: {exc.message}", code="llm_stream_error", transient=True
        ) from exc
    if not finish_reason:
        raise LLMError("The LLM stream ended before the reply was complete.", code="llm_incomplete", transient=True)
    text = "".join(parts)
    return Completion(
        text=text,
        model=served_model,
        prompt_tokens=usage["prompt_tokens"] if usage else estimate_tokens(" ".join(m["content"] for m in messages)),
        completion_tokens=usage["completion_tokens"] if usage else estimate_tokens(text),
        finish_reason=finish_reason,
        headers=headers,
    )


async def _events(response):
    """The JSON objects of a chat-completions event stream (server-sent events) until `[DONE]`; an error
    event raises `openai.APIError`, as the SDK's own stream does."""
    data: list[str] = []
    done = False
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
            continue
        if line or not data or done:
            continue  # other fields (event:, id:, comments), or what follows [DONE] (read for the connection's sake)
        payload, data = "\n".join(data), []
        if payload.startswith("[DONE]"):
            done = True
            continue
        event = json.loads(payload)
        if isinstance(event, dict) and event.get("error"):
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else None
            raise openai.APIError(
                message=message if isinstance(message, str) and message else "An error occurred during streaming",
                request=response.request,
                body=error,
            )
        if isinstance(event, dict):
            yield event


def _headers(response) -> dict:
    """The response's headers as a plain dict with lower-case names (empty without a response)."""
    if response is None:
        return {}
    return {name.lower(): value for name, value in response.headers.items()}


def _status_error(exc: openai.APIStatusError) -> LLMError:
    status = exc.status_code
    transient = status in TRANSIENT_STATUSES or status >= 500
    code = "llm_rate_limited" if status == 429 else "llm_unavailable" if transient else "llm_rejected"
    return LLMError(
        f"The LLM provider answered HTTP {status}.",
        code=code,
        transient=transient,
        status=status,
        retry_after=parse_retry_after(exc.response.headers) if transient else None,
        headers=_headers(exc.response),
    )


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date; None if absent or bad."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return _seconds(float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return _seconds(float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if _looks_like_date(value) else None
        if parsed is None:
            return None
        return max(parsed.timestamp() - time.time(), 0.0)


def _seconds(value: float) -> float | None:
    """`nan` and `inf` parse as floats but are no delay at all."""
    return max(value, 0.0) if math.isfinite(value) else None


def _looks_like_date(value: str) -> bool:
    try:
        return email.utils.parsedate_tz(value) is not None
    except (TypeError, ValueError):
        return False


def estimate_tokens(text: str) -> int:
    """A provider-independent estimate (~4 characters a token), used for budgets and missing usage."""
    return max(1, (len(text) + 3) // 4) if text else 0
