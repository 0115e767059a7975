"""A real local HTTP server speaking OpenAI's `POST /v1/chat/completions` (plain and streaming).

Tests script how it answers the next requests: a reply split into chunks, slow chunks, an HTTP
error (500, 429 with Retry-After, 400, ...), a stream cut mid-way (the connection drops inside a
chunked body), a stall long enough to trip the client's timeout, or a hold on an event the test
releases. Every request it received is recorded (path, headers, JSON body).

`rate_limit(requests=N, tokens=M, period=60)` makes it enforce N requests / M tokens per sliding period
like a real provider: over the limit it answers 429 (with Retry-After), and every completion response
carries OpenAI's `x-ratelimit-*` headers (limits stated per minute, as OpenAI does, whatever the
period; remaining and reset for the period). `rejected` counts the 429s it sent that way.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Behaviour:
    text: str = "Hello from the fake model."
    chunks: list[str] | None = None  # explicit deltas; default: the text split into words
    status: int = 200
    error_type: str = "server_error"
    retry_after: str | None = None
    delay_before: float = 0.0  # seconds before the response headers (a slow or hung provider)
    delay_per_chunk: float = 0.0
    cut_after: int | None = None  # drop the connection after this many chunks, mid-body
    stall_after: int | None = None  # stop sending (but keep the socket open) after this many chunks
    stall_seconds: float = 30.0
    hold_after: int | None = None  # wait for `release()` after this many chunks
    error_event_after: int | None = None  # send an in-stream `{"error": ...}` event after N chunks
    prompt_tokens: int = 11
    model: str | None = None  # echo the requested model when None

    def deltas(self) -> list[str]:
        if self.chunks is not None:
            return list(self.chunks)
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]


@dataclass
class ReceivedRequest:
    path: str
    headers: dict  # lower-case names
    body: dict
    at: float = field(default_factory=time.monotonic)


class FakeLLM:
    def __init__(self):
        self.requests: list[ReceivedRequest] = []
        self.default = Behaviour()
        self._script: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.holding = threading.Event()  # set while a response waits on `release()`
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.api_key = "sk-test-" + uuid.uuid4().hex
        self.limits: dict | None = None
        self._window: deque[tuple[float, int]] = deque()  # (admitted at, tokens) within the period
        self.rejected = 0

    # --- control
    def start(self) -> FakeLLM:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-llm", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def then(self, *behaviours: Behaviour) -> FakeLLM:
        """Answer the next requests with these behaviours, in order; afterwards with `default`."""
        with self._lock:
            self._script.extend(behaviours)
        return self

    def always(self, behaviour: Behaviour) -> FakeLLM:
        with self._lock:
            self.default = behaviour
            self._script.clear()
        return self

    def release(self) -> None:
        self._released.set()

    def rate_limit(
        self, *, requests: int | None = None, tokens: int | None = None, period: float = 60.0, send_headers: bool = True
    ) -> FakeLLM:
        with self._lock:
            self.limits = {"requests": requests, "tokens": tokens, "period": period, "headers": send_headers}
            self._window.clear()
            self.rejected = 0
        return self

    def _admit(self, tokens: int) -> tuple[bool, dict]:
        """(admitted, headers) for one completion request costing `tokens`, over a sliding window."""
        with self._lock:
            if self.limits is None:
                return True, {}
            period, now = self.limits["period"], time.monotonic()
            while self._window and self._window[0][0] <= now - period:
                self._window.popleft()
            used_requests, used_tokens = len(self._window), sum(t for _, t in self._window)
            max_requests, max_tokens = self.limits["requests"], self.limits["tokens"]
            admitted = (max_requests is None or used_requests + 1 <= max_requests) and (
                max_tokens is None or used_tokens + tokens <= max_tokens
            )
            if admitted:
                self._window.append((now, tokens))
                used_requests, used_tokens = used_requests + 1, used_tokens + tokens
            else:
                self.rejected += 1
            # Back to the initial state when the newest entry leaves the window; a slot frees when the oldest does.
            full_reset = (self._window[-1][0] + period - now) if self._window else 0.0
            first_free = (self._window[0][0] + period - now) if self._window else 0.0
            headers = {}
            per_minute = 60.0 / period  # OpenAI states limits per minute; a shorter test period scales them
            if self.limits["headers"]:
                if max_requests is not None:
                    headers.update(
                        {
                            "x-ratelimit-limit-requests": str(round(max_requests * per_minute)),
                            "x-ratelimit-remaining-requests": str(max(max_requests - used_requests, 0)),
                            "x-ratelimit-reset-requests": f"{full_reset:.3f}s",
                        }
                    )
                if max_tokens is not None:
                    headers.update(
                        {
                            "x-ratelimit-limit-tokens": str(round(max_tokens * per_minute)),
                            "x-ratelimit-remaining-tokens": str(max(max_tokens - used_tokens, 0)),
                            "x-ratelimit-reset-tokens": f"{full_reset:.3f}s",
                        }
                    )
            if not admitted:
                headers["Retry-After"] = f"{max(first_free, 0.001):.3f}"
            return admitted, headers

    def _next(self) -> Behaviour:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    @property
    def completion_requests(self) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeLLM

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        fake = self.fake
        fake.requests.append(ReceivedRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            return self._json(401, {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}})

        behaviour = fake._next()
        admitted, limit_headers = fake._admit(behaviour.prompt_tokens + len(behaviour.deltas()))
        if not admitted:
            with fake._lock:
                fake._script.appendleft(behaviour)  # the scripted answer is for the next admitted request
            return self._json(
                429,
                {"error": {"message": "Rate limit reached (fake)", "type": "requests", "code": "rate_limit_exceeded"}},
                limit_headers,
            )
        if behaviour.delay_before:
            time.sleep(behaviour.delay_before)
        if behaviour.status != 200:
            headers = {"Retry-After": behaviour.retry_after} if behaviour.retry_after else {}
            headers.update(limit_headers)
            return self._json(
                behaviour.status,
                {"error": {"message": f"fake {behaviour.status}", "type": behaviour.error_type}},
                headers,
            )
        if body.get("stream"):
            return self._stream(body, behaviour, limit_headers)
        text = "".join(behaviour.deltas())
        return self._json(
            200,
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": behaviour.model or body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": _usage(behaviour, len(behaviour.deltas())),
            },
            limit_headers,
        )

    def _json(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, body, behaviour: Behaviour, headers=None):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        model = behaviour.model or body.get("model", "fake")
        deltas = behaviour.deltas()
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        try:
            self._event(
                {
                    **base,
                    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                }
            )
            for sent, delta in enumerate(deltas):
                if self._interrupt(behaviour, sent):
                    return
                if behaviour.delay_per_chunk:
                    time.sleep(behaviour.delay_per_chunk)
                self._event({**base, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]})
            if self._interrupt(behaviour, len(deltas)):
                return
            self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                self._event({**base, "choices": [], "usage": _usage(behaviour, len(deltas))})
            self._chunk(b"data: [DONE]\n\n")
            self._chunk(b"")  # the terminating zero-length chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (cancelled or timed out)

    def _interrupt(self, behaviour: Behaviour, sent: int) -> bool:
        """Apply cut/stall/hold/error after `sent` chunks; True when the response must stop here."""
        if behaviour.hold_after == sent:
            self.fake.holding.set()
            self.fake._released.wait(30)
        if behaviour.error_event_after == sent:
            self._event({"error": {"message": "fake in-stream error", "type": "server_error"}})
            self._chunk(b"")
            return True
        if behaviour.stall_after == sent:
            time.sleep(behaviour.stall_seconds)
            self.close_connection = True
            return True
        if behaviour.cut_after == sent:
            self.wfile.flush()
            # Drop the connection inside the chunked body: the client sees an incomplete message.
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return True
        return False

    def _event(self, payload):
        self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _chunk(self, data: bytes):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _usage(behaviour: Behaviour, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": behaviour.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": behaviour.prompt_tokens + completion_tokens,
    }
