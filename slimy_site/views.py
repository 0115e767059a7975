"""The front door at `/`: where a newcomer finds the admin, the API docs, health and the quick start."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.shortcuts import render
from django.urls import reverse

QUICK_START_HEADING = "## Quick start"


def readme_quick_start(*, path: Path) -> str:
    """The README's quick-start section as its Markdown text (readable as is); empty if absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    start = text.find(QUICK_START_HEADING)
    if start < 0:
        return ""
    body = text[start + len(QUICK_START_HEADING) :]
    end = body.find("\n## ")
    return (body if end < 0 else body[:end]).strip()


def quick_start_blocks(text: str) -> list[dict]:
    """The section cut into what the page shows: fenced code as is, headings, and paragraphs with their
    hard line breaks joined (the Markdown stays as written: `code` keeps its backticks)."""
    blocks: list[dict] = []
    lines: list[str] = []
    in_code = False

    def flush(kind):
        if lines and any(line.strip() for line in lines):
            joined = "\n".join(lines) if kind == "code" else " ".join(line.strip() for line in lines)
            blocks.append({"kind": kind, "text": joined.strip("\n") if kind == "code" else joined.strip()})
        lines.clear()

    for line in text.splitlines():
        if line.startswith("```"):
            flush("code" if in_code else "paragraph")
            in_code = not in_code
        elif in_code:
            lines.append(line)
        elif line.startswith("#"):
            flush("paragraph")
            blocks.append({"kind": "heading", "text": line.lstrip("#").strip()})
        elif not line.strip():
            flush("paragraph")
        else:
            lines.append(line)
    flush("code" if in_code else "paragraph")
    return blocks


def front_door(request):
    links = [
        {
            "title": "Admin",
            "url": reverse("admin:index"),
            "id": "slimy-link-admin",
            "text": "Jobs, the queue dashboard, conversations and the audit trail (staff accounts).",
        },
        {
            "title": "API docs",
            "url": reverse("api-docs"),
            "id": "slimy-link-docs",
            "text": f"Every endpoint with its errors (OpenAPI, Swagger UI); the schema is at {reverse('api-schema')}.",
        },
        {
            "title": "Health",
            "url": reverse("health-ready"),
            "id": "slimy-link-health",
            "text": f"Readiness of the database, Redis and migrations (JSON); liveness at {reverse('health-live')}.",
        },
        {
            "title": "Quick start",
            "url": "#quick-start",
            "id": "slimy-link-quick-start",
            "text": "How to run it, and what the first run shows (from README.md).",
        },
    ]
    return render(
        request,
        "front_door.html",
        {
            "links": links,
            "quick_start": quick_start_blocks(readme_quick_start(path=Path(settings.BASE_DIR) / "README.md")),
        },
    )
