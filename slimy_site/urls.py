from django.contrib import admin
from django.urls import include, path

from queues.api import health
from queues.metrics import views as metrics_views
from slimy_site import views

admin.site.site_header = "Slimy"
admin.site.site_title = "Slimy admin"

urlpatterns = [
    path("", views.front_door, name="front-door"),
    path("health/live", health.live, name="health-live"),
    path("health/live/", health.live),
    path("health/ready", health.ready, name="health-ready"),
    path("health/ready/", health.ready),
    path("admin/rq/", include("queues.admin.rq_urls")),  # gated, read-only (see the module)
    path("admin/", admin.site.urls),
    path("api/chat/", include("chat.urls")),
    path("api/audit-log", include("audit.urls")),
    path("api/metrics", metrics_views.MetricsSnapshotApi.as_view(), name="metrics-snapshot"),
    path("api/", include("queues.urls")),
    path("metrics", metrics_views.MetricsExportApi.as_view(), name="prometheus-metrics"),
]

handler404 = "slimy_site.exceptions.api_not_found"
handler500 = "slimy_site.exceptions.api_server_error"
