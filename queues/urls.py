from django.urls import path

from queues import apis
from queues import output_apis

urlpatterns = [
    path("jobs/<str:job_id>/output", output_apis.JobOutputApi.as_view(), name="job-output"),
    path("jobs/<str:job_id>/events", output_apis.JobEventsApi.as_view(), name="job-events"),
    path("jobs/<str:job_id>", apis.JobDetailApi.as_view(), name="job-detail"),
    path("jobs/<str:job_id>/retry", apis.JobRetryApi.as_view(), name="job-retry"),
    path("jobs/<str:job_id>/cancel", apis.JobCancelApi.as_view(), name="job-cancel"),
]
