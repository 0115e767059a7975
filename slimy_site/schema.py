"""OpenAPI (drf-spectacular): every operation lists the error codes it can answer.

`SlimyAutoSchema` names nested serializers after their view (`MeApi.OutputSerializer` → `MeOutput`, so
the house style's `InputSerializer`/`OutputSerializer` never collide) and adds the codes every endpoint shares (slimy_site.exceptions.COMMON_ERROR_CODES);
an endpoint adds its own with `extend_schema(responses={200: Out, **error_responses("job_not_found")})`.
"""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse

from slimy_site.exceptions import COMMON_ERROR_CODES
from slimy_site.serializers import ErrorSerializer

# Every code an endpoint may declare, with its status and a typical message.
ERROR_CODES = {
    "validation_error": (400, "The input is not valid."),
    "malformed_request": (400, "JSON parse error."),
    "invalid_idempotency_key": (400, "Idempotency-Key must be 1-255 printable characters."),
    "unknown_job_type": (400, "Unknown job type."),
    "invalid_cursor": (400, "The cursor is not valid."),
    "invalid_limit": (400, "The input is not valid."),
    "too_many_events": (400, "At most 1000 events per request."),
    "not_authenticated": (401, "Authentication credentials were not provided."),
    "authentication_failed": (401, "Invalid token."),
    "permission_denied": (403, "You do not have permission to perform this action."),
    "csrf_failed": (403, "CSRF Failed: CSRF token missing."),
    "not_found": (404, "Not found."),
    "job_not_found": (404, "Job not found."),
    "conversation_not_found": (404, "Conversation not found."),
    "audit_event_not_found": (404, "Audit event not found."),
    "report_not_found": (404, "Report not found."),
    "method_not_allowed": (405, 'Method "PUT" not allowed.'),
    "not_acceptable": (406, "Could not satisfy the request Accept header."),
    "conflict": (409, "The request conflicts with the current state."),
    "job_not_retryable": (409, "Only failed or cancelled jobs can be retried."),
    "job_not_cancellable": (409, "The job is already completed."),
    "report_not_available": (409, "The report job is failed: no result."),
    "payload_too_large": (413, "The request body exceeds 65536 bytes."),
    "unsupported_media_type": (415, 'Unsupported media type "text/plain" in request.'),
    "idempotency_key_reused": (422, "This Idempotency-Key was already used with a different request."),
    "rate_limited": (429, "Too many requests; retry in 12 seconds."),
    "too_many_streams": (429, "Too many open event streams; close one or try again later."),
    "internal_error": (500, "An internal error occurred."),
    "queue_full": (503, "The queue is full; retry later."),
    "queues_unavailable": (503, "The job queues are unavailable; retry later."),
    "database_unavailable": (503, "The database is unavailable; retry later."),
}

SUBMIT_ERROR_CODES = (
    "validation_error",
    "invalid_idempotency_key",
    "idempotency_key_reused",
    "queue_full",
    "queues_unavailable",
)


def error_responses(*codes: str) -> dict:
    """`{status: OpenApiResponse}` documenting the given codes (grouped by status) with examples."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        status = ERROR_CODES[code][0]  # KeyError on a typo: add the code to ERROR_CODES
        if code not in by_status.setdefault(status, []):
            by_status[status].append(code)
    return {status: _response(status, names) for status, names in sorted(by_status.items())}


def _response(status: int, codes: list[str]) -> OpenApiResponse:
    return OpenApiResponse(
        response=ErrorSerializer,
        description="Error codes: " + ", ".join(f"`{c}`" for c in codes),
        examples=[
            OpenApiExample(
                code,
                value={"ok": False, "error": code, "message": ERROR_CODES[code][1]},
                response_only=True,
                status_codes=[str(status)],
            )
            for code in codes
        ],
    )


class SlimyAutoSchema(AutoSchema):
    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        if direction == "request" and schema.get("type") == "object":
            # Every input of this API refuses unknown fields (StrictSerializer, JobDefinition.validate),
            # so request bodies are closed; responses may grow new fields.
            schema["additionalProperties"] = False
        return schema

    def _allowed_roles(self) -> list[str] | None:
        """The roles that may call this operation, from the view's role permission classes."""
        roles = None
        for permission in self.view.get_permissions():
            allowed = getattr(permission, "allowed_roles", None)
            if allowed is not None:
                roles = [r for r in (roles if roles is not None else allowed) if r in allowed]
        return roles

    # drf-spectacular's AutoSchema.get_description() takes no arguments; the stubs know DRF's ViewInspector's.
    def get_description(self):  # type: ignore[override]
        description = super().get_description() or ""
        roles = self._allowed_roles()
        if roles:
            text = "Roles: " + ", ".join(f"`{r}`" for r in roles) + ". Others: `403 permission_denied`."
            description = f"{description}\n\n{text}" if description else text
        return description

    def get_extensions(self):
        extensions = dict(super().get_extensions() or {})
        roles = self._allowed_roles()
        if roles:
            extensions["x-roles"] = roles
        return extensions

    def get_serializer_name(self, serializer, direction):
        """Nested serializers (`JobListApi.OutputSerializer`) are named after their view: `JobListOutput`."""
        cls = serializer if isinstance(serializer, type) else serializer.__class__
        parts = cls.__qualname__.split(".")
        if len(parts) > 1 and "<locals>" not in parts:
            return parts[-2].removesuffix("Api") + parts[-1]
        return super().get_serializer_name(serializer, direction)

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        common = [code for codes in COMMON_ERROR_CODES.values() for code in codes]
        if self._allowed_roles():
            common.append("permission_denied")
        if self.method in ("GET", "HEAD", "DELETE"):
            common = [
                c for c in common if c not in ("malformed_request", "payload_too_large", "unsupported_media_type")
            ]
        if getattr(self.view, "permission_classes", None) and _is_public(self.view):
            common = [c for c in common if c not in ("not_authenticated", "authentication_failed")]
        for status, response in error_responses(*common).items():
            key = str(status)
            shared = self._get_response_for_code(response, key, direction=direction)
            if key in responses:
                # The endpoint documented this status itself: add the shared codes to its own.
                own = responses[key]
                own["description"] = _merge_description(own.get("description", ""), shared["description"])
                for media, content in shared.get("content", {}).items():
                    target = own.setdefault("content", {}).setdefault(media, content)
                    if target is not content and "examples" in content:
                        target.setdefault("examples", {}).update(
                            {k: v for k, v in content["examples"].items() if k not in target.get("examples", {})}
                        )
                continue
            responses[key] = shared
        return dict(sorted(responses.items()))


def _is_public(view) -> bool:
    from rest_framework.permissions import AllowAny

    return all(cls is AllowAny for cls in view.permission_classes)


def _merge_description(own: str, shared: str) -> str:
    shared_codes = shared.removeprefix("Error codes: ")
    if not own.startswith("Error codes: "):
        return own or shared
    missing = [c for c in shared_codes.split(", ") if c not in own]
    return own + (", " + ", ".join(missing) if missing else "")
