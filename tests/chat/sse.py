"""Reading Server-Sent Events in tests: from Django's streaming responses and from real sockets."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass


@dataclass
class Event:
    kind: str
    data: dict
    id: str | None


def parse(lines) -> list[Event | str]:
    """Events (and comment lines, as strings) from an iterable of text lines."""
    out: list[Event | str] = []
    fields: dict[str, str] = {}
    for raw in lines:
        line = raw.rstrip("\r\n")
        if line == "":
            if "event" in fields or "data" in fields:
                out.append(
                    Event(fields.get("event", "message"), json.loads(fields.get("data", "{}")), fields.get("id"))
                )
            fields = {}
        elif line.startswith(":"):
            out.append(line)
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
    return out


def events_of(response) -> list[Event | str]:
    text = b"".join(response.streaming_content).decode()
    return parse(text.splitlines(keepends=True))


def only(events, kind: str) -> list[Event]:
    return [e for e in events if isinstance(e, Event) and e.kind == kind]


class LiveStream:
    """An SSE connection to a real server, read event by event."""

    def __init__(self, port: int, path: str, token: str, last_event_id: str | None = None, timeout: float = 15):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        headers = {"Authorization": f"Token {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()

    def next(self) -> Event | str | None:
        """The next event or comment; None when the server ended the stream."""
        fields: dict[str, str] = {}
        while True:
            raw = self.response.readline()
            if not raw:
                return None
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if "event" in fields or "data" in fields:
                    return Event(fields.get("event", "message"), json.loads(fields.get("data", "{}")), fields.get("id"))
                fields = {}
                continue
            if line.startswith(":"):
                return line
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value

    def close(self):
        self.conn.close()
