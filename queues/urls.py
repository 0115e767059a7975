from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from queues.api import jobs as apis
from queues.api import output as output_apis

urlpatterns = [
    path("me", apis.MeApi.as_view(), name="api-me"),
    path("jobs", apis.JobListApi.as_view(), name="job-list"),
    path("jobs/<str:job_id>/output", output_apis.JobOutputApi.as_view(), name="job-output"),
    path("jobs/<str:job_id>/events", output_apis.JobEventsApi.as_view(), name="job-events"),
    path("jobs/<str:job_id>", apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<str:job_id>/retry", apis.JobRetryApi.as_view(), name="job-retry"),
    path("jobs/<str:job_id>/cancel", apis.JobCancelApi.as_view(), name="job-cancel"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
