"""The site's urls plus one job-creating endpoint, so a test can follow a request into a worker."""

from django.urls import include, path
from rest_framework.views import APIView

from queues.api.submit import accept_job


class FlakyJobCreateApi(APIView):
    def post(self, request):
        return accept_job(request, job_type="test_flaky", payload={"succeed_on": 2, "tag": "correlation"})


urlpatterns = [
    path("test/flaky-jobs", FlakyJobCreateApi.as_view()),
    path("", include("slimy_site.urls")),
]
