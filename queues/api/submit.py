"""What every job-submitting endpoint shares: safety rails, Idempotency-Key, the 202 answer.

A view adapts its input, then calls `accept_job(...)`, which (in this order)
- checks the Idempotency-Key header (400 `invalid_idempotency_key`),
- refuses at once when Redis does not answer (503 `queues_unavailable`, no hanging),
- charges the caller's `submit` rate limit (429 `rate_limited`),
- refuses when the target queue's backlog exceeds QUEUE_MAX_BACKLOG (503 `queue_full`) — unless the
  request replays an existing Idempotency-Key, which creates nothing,
  (those three checks are one Redis round trip: one pipeline with the rate-limit scripts — `submit`, and
  the view's own scope when the view lists the method in `submit_methods` — and the backlog lengths;
  looking the Idempotency-Key up in the ledger happens only when one is sent),
- calls `job_enqueue` and answers `202 {ok, jobId, status, statusUrl, ...extra}`; a replay of the same
  key and body answers `200` with the body of the original `202` (for 24 h, even after the job ran),
  the same key with another body `422 idempotency_key_reused`.
Job options (attempts, timeout, queue, job id) are never taken from the client; priority and delay
only when the view passes them, validated by `PriorityField` / `DelayField`.
"""

from __future__ import annotations

import functools
import json
import logging
import re

from django.conf import settings
from django.urls import get_script_prefix, reverse
from django.utils.encoding import iri_to_uri
from redis.exceptions import RedisError
from rest_framework import serializers
from rest_framework.response import Response

from queues.api.throttling import (
    GCRA_LUA,
    rate_limit_charges,
    rate_limit_connection,
    rate_limit_queue,
    rate_limit_take_deferred,
    rate_limit_wait,
    rate_limited,
)
from queues.connections import get_connection, get_rq_queue, script_run
from queues.constants import PRIORITY_ORDER, JobStatus, Priority
from queues.definitions import registry
from queues.fairness import fair_waiting_count
from queues.keys import IDEMPOTENCY_REPLAY_KEY
from queues.models import JobRecord
from queues.services import IDEMPOTENCY_WINDOW, UnknownJobType, job_enqueue
from slimy_site.exceptions import ServiceUnavailable, ValidationFailed
from slimy_site.schema import SUBMIT_ERROR_CODES, error_responses

logger = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
RETRY_AFTER_SECONDS = 5
# Most a client may defer a job through an endpoint that offers `delay` (services allow 30 days).
MAX_CLIENT_DELAY_SECONDS = 24 * 3600


class QueuesUnavailable(ServiceUnavailable):
    code = "queues_unavailable"
    message = "The job queues are unavailable; retry later."


class QueueFull(ServiceUnavailable):
    code = "queue_full"
    message = "The queue is full; retry later."


class JobAcceptedSerializer(serializers.Serializer):
    """The answer of every job-submitting endpoint (`202`, or `200` for an Idempotency-Key replay)."""

    ok = serializers.BooleanField()
    jobId = serializers.UUIDField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    statusUrl = serializers.URLField(help_text="GET it to follow the job.")

    class Meta:
        ref_name = "JobAccepted"


def submit_responses(accepted=JobAcceptedSerializer, *codes: str) -> dict:
    """`responses=` for a job-submitting operation: the accepted body and every code `accept_job` answers.

    `accepted` is JobAcceptedSerializer or a subclass adding the endpoint's extra fields; `codes` are
    the endpoint's own (e.g. "conversation_not_found" is documented by the endpoint itself).
    """
    return {202: accepted, 200: accepted, **error_responses(*SUBMIT_ERROR_CODES, *codes)}


class PriorityField(serializers.ChoiceField):
    """For endpoints that let clients choose a priority."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("default", Priority.NORMAL)
        super().__init__(choices=Priority.values, **kwargs)


class DelayField(serializers.FloatField):
    """For endpoints that let clients defer a job: seconds, 0 to MAX_CLIENT_DELAY_SECONDS."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("allow_null", True)
        kwargs.setdefault("default", None)
        super().__init__(min_value=0, max_value=MAX_CLIENT_DELAY_SECONDS, **kwargs)


def idempotency_key_from(request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not _IDEMPOTENCY_KEY.match(key):
        raise ValidationFailed(
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces.",
            code="invalid_idempotency_key",
            details={"Idempotency-Key": ["Must be 1-255 printable ASCII characters without spaces."]},
        )
    return key


_ID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


@functools.lru_cache(maxsize=64)
def _job_detail_path(script_prefix: str) -> tuple[str, str]:
    # The path around the id, reversed (and quoted as build_absolute_uri quotes it) once per script prefix
    # instead of once per submission.
    head, _, tail = reverse("job-detail", kwargs={"job_id": _ID_PLACEHOLDER}).partition(_ID_PLACEHOLDER)
    return iri_to_uri(head), iri_to_uri(tail)


def job_accepted_body(request, job, **extra) -> dict:
    head, tail = _job_detail_path(get_script_prefix())
    body = {
        "ok": True,
        "jobId": str(job.id),
        "status": job.status,
        # request.build_absolute_uri() of the path, without parsing and quoting an absolute path with an id
        # in it: the host is validated by get_host() as there.
        "statusUrl": f"{request.scheme}://{request.get_host()}{head}{job.id}{tail}",
    }
    body.update(extra)
    return body


def submission_guard(request, *, queue: str, replay: bool = False) -> None:
    """The checks before anything is pushed to `queue` (also used by job retry), in one round trip on
    the short-timeout connection: Redis answering, the `submit` rate limit, the backlog."""
    if queue not in settings.FAIR_QUEUES:
        _guard_in_one_script(request, queue=queue, replay=replay)
        return
    try:
        with rate_limit_connection().pipeline(transaction=False) as pipe:
            pipe.ping()
            # The view's own scope first (left here by the DRF throttle: see rate_limit_defer), then `submit`.
            charged = [
                scope
                for scope in (*rate_limit_take_deferred(request), "submit")
                if rate_limit_queue(pipe, request, scope=scope)
            ]
            if not replay:
                for key in _queue_keys(queue):
                    pipe.llen(key)
                if queue in settings.FAIR_QUEUES:  # its jobs wait in tenants' lines (queues.fairness)
                    fair_waiting_count(conn=pipe, queue=queue, pipeline=pipe)
            replies = pipe.execute()
    except (RedisError, OSError) as exc:
        logger.warning("submission refused: Redis did not answer the guard (%s: %s)", exc.__class__.__name__, exc)
        raise QueuesUnavailable(headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    replies = replies[1:]
    for scope in charged:
        wait = rate_limit_wait(replies.pop(0))
        if wait:
            raise rate_limited(scope=scope, wait=wait)
    if replay:
        return
    _refuse_when_full(queue, sum(int(n) for n in replies))


# The guard of a queue whose jobs wait in RQ's lists, as one script (one command; its reply shows Redis
# answers): the GCRA of each rate-limit scope (queues.api.throttling.GCRA_LUA), each charged when allowed, then the
# backlog. KEYS: one per scope, then the queue's lists. ARGV: the number of scopes, then limit and period
# (ms) per scope. Returns the ms to wait per scope (0: allowed), then the backlog.
_GUARD_SCRIPT = (
    GCRA_LUA
    + """
local n = tonumber(ARGV[1])
local now = now_ms()
local out = {}
for i = 1, n do
  local _, wait = gcra(KEYS[i], tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1]), now)
  out[i] = wait
end
local backlog = 0
for j = n + 1, #KEYS do
  backlog = backlog + redis.call('LLEN', KEYS[j])
end
out[n + 1] = backlog
return out
"""
)


def _guard_in_one_script(request, *, queue: str, replay: bool) -> None:
    # The view's own scope first (left here by the DRF throttle: see rate_limit_defer), then `submit`.
    charges = rate_limit_charges(request, scopes=(*rate_limit_take_deferred(request), "submit"))
    keys = [key for _, key, _, _ in charges] + ([] if replay else list(_queue_keys(queue)))
    args: list = [len(charges)]
    for _, _, limit, period_ms in charges:
        args += (limit, period_ms)
    conn = rate_limit_connection()
    try:
        replies = script_run(conn, _GUARD_SCRIPT, keys=keys, args=args)
    except (RedisError, OSError) as exc:
        logger.warning("submission refused: Redis did not answer the guard (%s: %s)", exc.__class__.__name__, exc)
        raise QueuesUnavailable(headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
    for (scope, _, _, _), wait_ms in zip(charges, replies, strict=False):
        if int(wait_ms):
            raise rate_limited(scope=scope, wait=max(int(wait_ms) / 1000.0, 0.001))
    if not replay:
        _refuse_when_full(queue, int(replies[-1]))


def _refuse_when_full(queue: str, backlog: int) -> None:
    if backlog > settings.QUEUE_MAX_BACKLOG:
        logger.warning("queue %s is full (%s waiting); submission refused", queue, backlog)
        raise QueueFull(
            f"The {queue} queue is full; retry later.",
            details={"queue": queue},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


@functools.lru_cache(maxsize=64)
def _queue_keys(queue: str) -> tuple[str, ...]:
    return tuple(get_rq_queue(queue, priority).key for priority in PRIORITY_ORDER)


def accept_job(
    request, *, job_type: str, payload: dict, priority: str = "normal", delay=None, run_at=None, extra_body=None
) -> Response:
    definition = registry.get(job_type)
    if definition is None:
        raise UnknownJobType(f"Unknown job type: {job_type!r}.")
    key = idempotency_key_from(request)
    owner = request.user if request.user.is_authenticated else None
    replay = bool(key and owner and _key_in_use(owner, key))
    submission_guard(request, queue=definition.queue, replay=replay)

    job = job_enqueue(
        job_type=job_type,
        payload=payload,
        owner=request.user,
        priority=priority,
        delay=delay,
        run_at=run_at,
        idempotency_key=key if owner else None,
        request_id=getattr(request, "request_id", None),
    )
    if job.replayed:
        logger.info("Idempotency-Key replay of job %s", job.id)
        return Response(_replay_body(request, job, extra_body), status=200)
    extra = extra_body(job) if callable(extra_body) else (extra_body or {})
    body = job_accepted_body(request, job, **extra)
    if key and owner:
        _remember_body(job, body)
    logger.info("job %s accepted (%s)", job.id, job_type)
    return Response(body, status=202)


def _key_in_use(owner, key: str) -> bool:
    return JobRecord.objects.filter(owner=owner, idempotency_key=key).exists()


def _remember_body(job, body: dict) -> None:
    """Keep the 202 body for replays (24 h). Best effort: without it a replay rebuilds the body."""
    try:
        get_connection().set(
            IDEMPOTENCY_REPLAY_KEY.format(job_id=job.id), json.dumps(body), ex=int(IDEMPOTENCY_WINDOW.total_seconds())
        )
    except (RedisError, OSError):
        logger.warning("could not store the Idempotency-Key answer of job %s", job.id)


def _replay_body(request, job, extra_body) -> dict:
    try:
        stored = get_connection().get(IDEMPOTENCY_REPLAY_KEY.format(job_id=job.id))
    except (RedisError, OSError):
        stored = None
    if stored:
        return json.loads(stored)
    # Lost (Redis flushed) or not stored yet (a concurrent duplicate): rebuild it as first answered.
    extra = extra_body(job) if callable(extra_body) else (extra_body or {})
    body = job_accepted_body(request, job, **extra)
    body["status"] = job.status if job.status in ("queued", "scheduled") else "queued"
    return body
