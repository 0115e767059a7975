"""What every job-submitting endpoint shares: Idempotency-Key, request id, the 202 answer.

A view adapts its input, then calls `accept_job(...)`, which calls `job_enqueue` and answers
`202 {ok, jobId, status, statusUrl}` (or `200` with the same body when an Idempotency-Key replays).
"""

from __future__ import annotations

from django.urls import reverse
from rest_framework.response import Response

from queues.services import job_enqueue
from slimy_site.exceptions import ValidationFailed

MAX_IDEMPOTENCY_KEY = 255


def idempotency_key_from(request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed(
            "Idempotency-Key must be 1-255 characters.", code="invalid_idempotency_key",
            details={"Idempotency-Key": ["Must be 1-255 characters."]},
        )
    return key


def job_accepted_body(request, job, **extra) -> dict:
    body = {
        "ok": True,
        "jobId": str(job.id),
        "status": job.status,
        "statusUrl": request.build_absolute_uri(reverse("job-detail", kwargs={"job_id": job.id})),
    }
    body.update(extra)
    return body


def accept_job(request, *, job_type: str, payload: dict, priority: str = "normal", delay=None, run_at=None,
               extra_body=None) -> Response:
    job = job_enqueue(
        job_type=job_type,
        payload=payload,
        owner=request.user,
        priority=priority,
        delay=delay,
        run_at=run_at,
        idempotency_key=idempotency_key_from(request),
        request_id=getattr(request, "request_id", None),
    )
    extra = extra_body(job) if callable(extra_body) else (extra_body or {})
    return Response(job_accepted_body(request, job, **extra), status=200 if job.replayed else 202)
