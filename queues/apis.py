"""Generic job endpoints: list, read, retry, cancel; plus `me`. Another user's job is a 404, never a 403."""

import re

from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound as DRFNotFound
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from queues.api_support import submission_guard
from queues.constants import JobStatus, QueueName
from queues.models import JobRecord
from queues.selectors import job_get_for_user, job_list_for_user
from queues import signals
from queues.services import job_cancel, job_retry
from slimy_site.exceptions import ValidationFailed
from slimy_site.roles import user_roles
from slimy_site.schema import error_responses
from slimy_site.serializers import EmptyInputSerializer, StrictSerializer, validate_input

# Codes written by our typed job errors are snake_case; anything else is an exception class name
# whose message may describe internals (hosts, SQL): owners see a generic message, staff the real one.
_TYPED_ERROR_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
GENERIC_JOB_ERROR = "The job failed because of an internal error."

JOB_ID_PARAMETER = OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The job id.")


class JobErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class JobItemSerializer(serializers.ModelSerializer):
    jobId = serializers.UUIDField(source="id")
    jobType = serializers.CharField(source="job_type")
    maxAttempts = serializers.IntegerField(source="max_attempts")
    progress = serializers.JSONField(allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at")
    startedAt = serializers.DateTimeField(source="started_at", allow_null=True)
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)
    result = serializers.JSONField(allow_null=True)
    error = serializers.SerializerMethodField()

    class Meta:
        model = JobRecord
        fields = ["jobId", "jobType", "queue", "status", "priority", "tenant", "attempts", "maxAttempts",
                  "progress", "createdAt", "startedAt", "finishedAt", "result", "error"]

    @extend_schema_field(JobErrorSerializer(allow_null=True))
    def get_error(self, obj) -> dict | None:
        if not obj.error_message:
            return None
        message = obj.error_message
        viewer = self.context.get("user")
        if not _TYPED_ERROR_CODE.match(obj.error_code or "") and not (viewer is not None and viewer.is_staff):
            message = GENERIC_JOB_ERROR
        return {"code": obj.error_code, "message": message}


class JobOutputSerializer(JobItemSerializer):
    ok = serializers.SerializerMethodField()

    class Meta(JobItemSerializer.Meta):
        fields = ["ok", *JobItemSerializer.Meta.fields]

    def get_ok(self, obj) -> bool:
        return True


def _job_body(job, request) -> dict:
    return JobOutputSerializer(job, context={"user": request.user}).data


class JobCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100
    invalid_cursor_message = _("Invalid cursor.")

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except DRFNotFound:
            # DRF answers a bad cursor with 404; it is bad input.
            raise ValidationFailed("Invalid cursor.", details={"cursor": ["Invalid cursor."]}) from None


class JobListApi(APIView):
    class FilterSerializer(StrictSerializer):
        status = serializers.MultipleChoiceField(choices=JobStatus.values, required=False,
                                                 help_text="One or more statuses, comma-separated.")
        type = serializers.CharField(required=False, max_length=100, help_text="Job type.")
        queue = serializers.ChoiceField(choices=QueueName.values, required=False)
        since = serializers.DateTimeField(required=False, help_text="Only jobs created at or after this time.")
        owner = serializers.CharField(required=False, max_length=150,
                                      help_text="Staff only: a username, or `*` for everyone's jobs.")
        cursor = serializers.CharField(required=False, help_text="From `next` or `previous`.")
        limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField(default=True)
        results = JobItemSerializer(many=True)
        next = serializers.URLField(allow_null=True)
        previous = serializers.URLField(allow_null=True)

    @extend_schema(
        operation_id="jobs_list",
        parameters=[FilterSerializer],
        responses={200: OutputSerializer, **error_responses("validation_error", "permission_denied")},
    )
    def get(self, request):
        query = dict(request.query_params.items())
        if "status" in query:  # `status=a,b` and `status=a&status=b` both work
            query["status"] = [s for value in request.query_params.getlist("status") for s in value.split(",") if s]
        filters = validate_input(self.FilterSerializer, query)
        jobs = _filtered_jobs(user=request.user, filters=filters)
        paginator = JobCursorPagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        return Response({
            "ok": True,
            "results": JobItemSerializer(page, many=True, context={"user": request.user}).data,
            "next": paginator.get_next_link(),
            "previous": paginator.get_previous_link(),
        })


def _filtered_jobs(*, user, filters):
    owner = filters.get("owner")
    if owner is not None and not user.is_staff:
        raise PermissionDenied("Only staff may list other users' jobs.")
    jobs = job_list_for_user(user=user)
    if owner is None:
        jobs = jobs.filter(owner=user)
    elif owner != "*":
        jobs = jobs.filter(owner__username=owner)
    if filters.get("status"):
        jobs = jobs.filter(status__in=sorted(filters["status"]))
    if filters.get("type"):
        jobs = jobs.filter(job_type=filters["type"])
    if filters.get("queue"):
        jobs = jobs.filter(queue=filters["queue"])
    if filters.get("since"):
        jobs = jobs.filter(created_at__gte=filters["since"])
    return jobs


class JobDetailApi(APIView):
    @extend_schema(operation_id="jobs_retrieve", parameters=[JOB_ID_PARAMETER],
                   responses={200: JobOutputSerializer, **error_responses("job_not_found")})
    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        return Response(_job_body(job, request))


class JobRetryApi(APIView):
    @extend_schema(
        operation_id="jobs_retry", parameters=[JOB_ID_PARAMETER], request=EmptyInputSerializer,
        responses={202: JobOutputSerializer, **error_responses(
            "validation_error", "job_not_found", "job_not_retryable", "queue_full", "queues_unavailable")},
    )
    def post(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        validate_input(EmptyInputSerializer, request.data)
        submission_guard(request, queue=job.queue)
        job = job_retry(job=job, actor=request.user)
        signals.operator_action.send(sender=None, request=request, action="job.retry", resource_type="job",
                                     resource_id=str(job.pk), details={"jobType": job.job_type})
        return Response(_job_body(job, request), status=202)


class JobCancelApi(APIView):
    @extend_schema(
        operation_id="jobs_cancel", parameters=[JOB_ID_PARAMETER], request=EmptyInputSerializer,
        responses={200: JobOutputSerializer, **error_responses("validation_error", "job_not_found",
                                                                 "job_not_cancellable")},
    )
    def post(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        validate_input(EmptyInputSerializer, request.data)
        job = job_cancel(job=job, actor=request.user)
        signals.operator_action.send(sender=None, request=request, action="job.cancel", resource_type="job",
                                     resource_id=str(job.pk), details={"jobType": job.job_type})
        return Response(_job_body(job, request))


class MeApi(APIView):
    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField(default=True)
        username = serializers.CharField()
        roles = serializers.ListField(child=serializers.CharField())
        isStaff = serializers.BooleanField()

    @extend_schema(operation_id="me_retrieve", responses={200: OutputSerializer})
    def get(self, request):
        user = request.user
        return Response({"ok": True, "username": user.get_username(), "roles": sorted(user_roles(user)),
                         "isStaff": user.is_staff})
