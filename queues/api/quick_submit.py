"""The quick path of a job-submitting POST: the common request answered without DRF's dispatch.

A view that mixes in `QuickSubmitMixin` and answers `quick_submission()` has its plain POSTs — a token
in `Authorization`, a JSON body that the view finds plainly valid, no `Idempotency-Key`, no query string,
no `Accept` other than `*/*` — authenticated, permitted, throttled, guarded, recorded and pushed here,
with the same checks DRF's dispatch and `accept_job` make: the view's first authenticator (the hashed
token, from its cache), the view's permission classes, the view's scope and `submit` charged in the
guard's one script, the same 202 body and `Allow` header, the same error bodies through the API's
exception handler. What it leaves out is DRF's per-request machinery (the Request wrapper, content
negotiation, the Response's rendering) and anything unusual: every request it does not recognise as
plain — another authentication, a body the view wants its serializer to word errors for, an unknown
token, a refused role — goes to DRF's dispatch untouched, before anything was charged or written.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any, NamedTuple

from django.http import HttpResponse
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import APIException
from rest_framework.renderers import JSONRenderer

from queues.api.submit import job_accepted_body, submission_guard
from queues.api.throttling import ScopedRedisThrottle, rate_limit_defer
from queues.definitions import registry
from queues.services import job_enqueue
from slimy_site.exceptions import api_exception_handler

logger = logging.getLogger(__name__)


class QuickSubmission(NamedTuple):
    """What a view makes of a plainly valid body: the job to create and the extra fields of its 202 (a dict,
    or a function of the new job returning one, as accept_job's `extra_body`)."""

    job_type: str
    payload: dict
    extra_body: Any = None


class QuickSubmitMixin:
    """For an APIView whose POST creates one job through `accept_job` (see the module's docstring)."""

    def quick_submission(self, request, data) -> QuickSubmission | None:
        """The job for a plainly valid body, checked in plain code; None sends the request to DRF."""
        return None

    def dispatch(self, request, *args, **kwargs):
        if request.method == "POST":
            answer = quick_submit(self, request)
            if answer is not None:
                return answer
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc]


def quick_submit(view, request) -> HttpResponse | None:
    """The answer to a plain submission, or None (nothing charged, nothing written) for DRF to handle."""
    meta = request.META
    if (
        meta.get("CONTENT_TYPE") != "application/json"
        or meta.get("HTTP_ACCEPT", "*/*") != "*/*"
        or meta.get("QUERY_STRING")
        or "HTTP_IDEMPOTENCY_KEY" in meta
    ):
        return None
    plan = _plans.get(type(view), _UNKNOWN)
    if plan is _UNKNOWN:
        plan = _plans[type(view)] = _view_plan(type(view))
    if plan is None:
        return None
    authenticator, parser, scope, allow = plan
    credentials = meta.get("HTTP_AUTHORIZATION", "").split()
    if len(credentials) != 2 or credentials[0].lower() != authenticator.keyword.lower():
        return None
    try:
        try:
            user, token = authenticator.authenticate_credentials(credentials[1])
            data = parser.parse(io.BytesIO(request.body), "application/json")
        except APIException:
            return None
        request.user, request.auth = user, token  # as DRF's Request sets them (the access log reads the user)
        if not all(permission.has_permission(request, view) for permission in view.get_permissions()):
            return None
        submission = view.quick_submission(request, data)
        if submission is None:
            return None
        rate_limit_defer(request, scope=scope)  # charged in the guard's script, as DRF's throttle leaves it
        body = _accept(request, submission)
    except Exception as exc:  # noqa: BLE001 - as DRF's dispatch: every error answers through the API's handler
        # (the database down while the role, the conversation or the record is read or written: a 503)
        response = api_exception_handler(exc, {"request": request, "view": view})
        answer = HttpResponse(
            JSONRenderer().render(response.data), status=response.status_code, content_type="application/json"
        )
        answer["Allow"] = allow
        for name in ("Retry-After", "WWW-Authenticate"):
            if name in response:
                answer[name] = response[name]
        return answer
    return _json(body, 202, allow)


def _accept(request, submission: QuickSubmission) -> dict:
    """`accept_job` for a request without an Idempotency-Key (the key's look-up and replay are not needed)."""
    definition = registry.get(submission.job_type)
    if definition is None:  # a programming error: the view named a type that does not exist
        raise LookupError(f"Unknown job type: {submission.job_type!r}.")
    submission_guard(request, queue=definition.queue)
    job = job_enqueue(
        job_type=submission.job_type,
        payload=submission.payload,
        owner=request.user,
        request_id=getattr(request, "request_id", None),
    )
    logger.info("job %s accepted (%s)", job.id, submission.job_type)
    extra = submission.extra_body
    return job_accepted_body(request, job, **((extra(job) if callable(extra) else extra) or {}))


_UNKNOWN: Any = object()
_plans: dict[type, Any] = {}  # per view class: what _view_plan found (None: DRF serves every request)


def _view_plan(view_class) -> tuple[TokenAuthentication, Any, str, str] | None:
    """What the quick path needs of a view class, once: its token authenticator, its JSON parser, the
    throttle scope its POST is charged (left to the guard), its `Allow` header. None when the view is
    not set up the way the quick path reproduces (then DRF serves every request)."""
    view = view_class()
    view.setup(None)  # as as_view() sets a view up (a GET view answers HEAD too: the Allow header says so)
    authenticators = view.get_authenticators()
    parsers = view.get_parsers()
    throttles = view.get_throttles()
    if (
        not authenticators
        or not isinstance(authenticators[0], TokenAuthentication)
        or not parsers
        or parsers[0].media_type != "application/json"
        or [type(t) for t in throttles] != [ScopedRedisThrottle]
        or "POST" not in getattr(view, "submit_methods", ())
        or [type(r) for r in view.get_renderers()] != [JSONRenderer]
    ):
        return None
    scope = getattr(view, "throttle_scope", None) or "write"
    return authenticators[0], parsers[0], scope, view.default_response_headers["Allow"]


def _json(data, status: int, allow: str) -> HttpResponse:
    # What DRF's JSONRenderer writes (compact, UTF-8, no NaN) and the headers its dispatch adds.
    content = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    response = HttpResponse(content, status=status, content_type="application/json")
    response["Allow"] = allow
    return response
