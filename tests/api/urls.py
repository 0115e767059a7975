"""The site's URLs plus test-only endpoints: a job-submitting view over accept_job and role probes."""

from django.urls import path
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from queues.api.submit import DelayField, PriorityField, accept_job
from slimy_site.roles import IsMember, IsService, IsStaff
from slimy_site.serializers import StrictSerializer, validate_input
from slimy_site.urls import urlpatterns as site_urlpatterns


class EchoSubmitApi(APIView):
    throttle_scope = "submit"

    class InputSerializer(StrictSerializer):
        value = serializers.CharField(max_length=100)
        count = serializers.IntegerField(min_value=0, max_value=10, required=False)
        priority = PriorityField()
        delay = DelayField()

    def post(self, request):
        data = validate_input(self.InputSerializer, request.data)
        payload = {"value": data["value"], **({"count": data["count"]} if "count" in data else {})}
        return accept_job(
            request,
            job_type="test_echo",
            payload=payload,
            priority=data["priority"],
            delay=data["delay"],
            extra_body=lambda job: {"echoOf": data["value"]},
        )


class BoomApi(APIView):
    def get(self, request):
        raise RuntimeError("secret internal detail: postgres://db.internal:5432")


def plain_boom(request):
    raise RuntimeError("secret internal detail outside DRF")


def _probe(permission):
    class ProbeApi(APIView):
        permission_classes = [permission]

        def get(self, request):
            return Response({"ok": True})

    return ProbeApi.as_view()


urlpatterns = [
    path("api/test/echo", EchoSubmitApi.as_view(), name="test-echo"),
    path("api/test/boom", BoomApi.as_view()),
    path("api/test/plain-boom", plain_boom),
    path("api/test/members-only", _probe(IsMember)),
    path("api/test/service-only", _probe(IsService)),
    path("api/test/staff-only", _probe(IsStaff)),
    *site_urlpatterns,
]

handler404 = "slimy_site.exceptions.api_not_found"
handler500 = "slimy_site.exceptions.api_server_error"
