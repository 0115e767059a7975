"""/metrics (Prometheus exposition) and GET /api/metrics (the JSON snapshot); neither is public.

Allowed: a staff user (session or API token), or `Authorization: Bearer <METRICS_TOKEN>` (for
Prometheus; compared in constant time; an empty METRICS_TOKEN accepts no bearer token at all).
Anything else is 401 (no or bad credentials) or 403 (a signed-in non-staff user), in the API error shape.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from prometheus_client.exposition import choose_encoder
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from queues.metrics.collector import scrape_registry
from queues.metrics.snapshot import metrics_snapshot
from slimy_site.authentication import HashedTokenAuthentication
from slimy_site.schema import error_responses

METRICS_SCRAPER = "metrics-token"


class MetricsScraper:
    """The identity of a request that presented the metrics token: not a user, never staff."""

    pk = None
    is_authenticated = True
    is_staff = False
    is_active = True


class MetricsTokenAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        if scheme != self.keyword:
            return None
        token = token.strip()
        expected = settings.METRICS_TOKEN
        if not token or not expected or not hmac.compare_digest(token.encode(), expected.encode()):
            raise exceptions.AuthenticationFailed("Invalid metrics token.")
        return MetricsScraper(), METRICS_SCRAPER

    def authenticate_header(self, request):
        return 'Bearer realm="metrics"'


class IsStaffOrMetricsToken(BasePermission):
    message = "Metrics are available to staff only."

    def has_permission(self, request, view):
        if request.auth == METRICS_SCRAPER:
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class _MetricsAccess(APIView):
    # The bearer scheme comes first so an anonymous request is answered 401 with
    # `WWW-Authenticate: Bearer`, which is what Prometheus and curl users need to see.
    authentication_classes = [MetricsTokenAuthentication, HashedTokenAuthentication, SessionAuthentication]
    permission_classes = [IsStaffOrMetricsToken]
    # Only staff and the scraper get in; a rate limit would only blind monitoring.
    throttle_classes = []


class _AnyAccept(BaseContentNegotiation):
    """Scrapers ask for text formats; errors are still answered in the JSON error shape."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class MetricsTokenScheme(OpenApiAuthenticationExtension):
    target_class = "queues.metrics.views.MetricsTokenAuthentication"
    name = "metricsToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "The METRICS_TOKEN setting."}


@extend_schema(exclude=True)  # Prometheus exposition format, not part of the JSON API
class MetricsExportApi(_MetricsAccess, APIView):
    """Prometheus text format (OpenMetrics when the scraper asks for it)."""

    content_negotiation_class = _AnyAccept

    def get(self, request):
        encoder, content_type = choose_encoder(request.META.get("HTTP_ACCEPT", ""))
        return HttpResponse(encoder(scrape_registry()), content_type=content_type)


class MetricsSnapshotApi(_MetricsAccess, APIView):
    @extend_schema(
        operation_id="metrics_snapshot",
        responses={200: OpenApiTypes.OBJECT, **error_responses("permission_denied")},
        description="Per-queue job figures, process, HTTP and audit figures (staff or METRICS_TOKEN).",
    )
    def get(self, request):
        return Response(metrics_snapshot())
