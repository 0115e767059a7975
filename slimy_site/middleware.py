"""Refuse oversized API bodies before anything reads them (413 `payload_too_large`).

The declared Content-Length decides: Django reads no more than it, so a body without one is empty.
Bodies outside /api/ (admin forms) keep Django's own DATA_UPLOAD_MAX_MEMORY_SIZE guard.
"""

from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware

from slimy_site.exceptions import api_error_response, is_api_request


def body_limit_for(path: str) -> int:
    """The byte limit for a path: the longest matching prefix in API_MAX_BODY_BYTES_BY_PATH, else the default."""
    matches = [prefix for prefix in settings.API_MAX_BODY_BYTES_BY_PATH if path.startswith(prefix)]
    if matches:
        return settings.API_MAX_BODY_BYTES_BY_PATH[max(matches, key=len)]
    return settings.API_MAX_BODY_BYTES


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if is_api_request(request):
            refused = self._check(request)
            if refused is not None:
                return refused
        return self.get_response(request)

    @staticmethod
    def _check(request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            return api_error_response("malformed_request", "Content-Length is not a valid length.", 400)
        limit = body_limit_for(request.path)
        if length > limit:
            return api_error_response(
                "payload_too_large",
                f"The request body exceeds {limit} bytes.",
                413,
                details={"maxBytes": limit, "receivedBytes": length},
            )
        return None


class SiteMessageMiddleware(MessageMiddleware):
    """Django's messages for the admin and the site's pages, not for the API: its answers are JSON and
    never carry a message, and building the message storage (cookie and session backends) was a
    twentieth of an API request's CPU."""

    def process_request(self, request):
        if not is_api_request(request):
            super().process_request(request)
