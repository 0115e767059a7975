"""Mounted at "api/audit-log" (no trailing slash, so the list is /api/audit-log), hence sub-routes
begin with "/". Django's urls.W002 check warns about such routes; here they are deliberate."""

from django.urls import path
from django.urls.resolvers import RoutePattern, URLPattern

from audit import apis


class _SlashRoute(RoutePattern):
    def _check_pattern_startswith_slash(self):
        return []


def sub(route: str, view, name: str) -> URLPattern:
    return URLPattern(_SlashRoute(route, name=name, is_endpoint=True), view, name=name)


urlpatterns = [
    path("", apis.AuditLogListApi.as_view(), name="audit-log-list"),
    sub("/stats", apis.AuditLogStatsApi.as_view(), "audit-log-stats"),
    sub("/verify", apis.AuditChainVerifyApi.as_view(), "audit-log-verify"),
    sub("/reports", apis.AuditReportCreateApi.as_view(), "audit-report-create"),
    sub("/reports/<str:job_id>", apis.AuditReportDetailApi.as_view(), "audit-report-detail"),
    sub("/<int:event_id>", apis.AuditLogDetailApi.as_view(), "audit-log-detail"),
]
