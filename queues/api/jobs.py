"""Generic job endpoints: list, read, retry, cancel; plus `me`. Another user's job is a 404, never a 403."""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from queues import signals
from queues.api.submit import submission_guard
from queues.constants import JobStatus, QueueName
from queues.models import JobRecord
from queues.selectors import job_error_for_viewer, job_get_for_user, job_list_for_user, user_may_act_on_any_job
from queues.services import job_cancel, job_retry
from slimy_site.cursors import INSTANT_PATTERN, instant_decode, instant_encode
from slimy_site.exceptions import ValidationFailed
from slimy_site.roles import user_roles
from slimy_site.schema import error_responses
from slimy_site.serializers import EmptyInputSerializer, StrictQuerySerializer, validate_input

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
        fields = [
            "jobId",
            "jobType",
            "queue",
            "status",
            "priority",
            "tenant",
            "attempts",
            "maxAttempts",
            "progress",
            "createdAt",
            "startedAt",
            "finishedAt",
            "result",
            "error",
        ]

    @extend_schema_field(JobErrorSerializer(allow_null=True))
    def get_error(self, obj) -> dict | None:
        return job_error_for_viewer(job=obj, viewer=self.context.get("user"))


class JobOutputSerializer(JobItemSerializer):
    ok = serializers.SerializerMethodField()

    class Meta(JobItemSerializer.Meta):
        fields = ["ok", *JobItemSerializer.Meta.fields]

    def get_ok(self, obj) -> bool:
        return True


def _job_body(job, request) -> dict:
    return JobOutputSerializer(job, context={"user": request.user}).data


class JobCursorPagination(CursorPagination):
    """DRF's cursor paging with a cursor of digits, `<offset>.<reverse 0|1>.<created_at in µs>`.

    DRF's own cursor is base64 of a query string whose position reaches the database as text: a
    tampered one (`p=garbage`) was a 500. Ours has a pattern the schema states (CURSOR_PATTERN), and
    every value matching it is a valid position (slimy_site.cursors); anything else is a 400.
    """

    ordering = ("-created_at", "-id")
    page_size = 20
    page_size_query_param = "limit"
    max_page_size = 100
    CURSOR_PATTERN = rf"^[0-9]{{1,9}}\.[01]\.({INSTANT_PATTERN})?$"

    def decode_cursor(self, request):
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        if not re.fullmatch(self.CURSOR_PATTERN, encoded):
            raise ValidationFailed("Invalid cursor.", details={"cursor": ["Not a cursor returned by this endpoint."]})
        offset, reverse, position = encoded.split(".")
        at = instant_decode(position) if position else None
        # Positions here are created_at datetimes, not the ints DRF's stubs assume.
        return Cursor(offset=min(int(offset), self.offset_cutoff), reverse=reverse == "1", position=at)  # type: ignore[arg-type]

    def encode_cursor(self, cursor):
        position = "" if cursor.position is None else instant_encode(cursor.position)
        encoded = f"{cursor.offset}.{int(bool(cursor.reverse))}.{position}"
        assert self.base_url is not None  # set by paginate_queryset before any cursor is encoded
        return replace_query_param(self.base_url, self.cursor_query_param, encoded)

    def _get_position_from_instance(self, instance, ordering):
        return instance.created_at  # a datetime, encoded as digits by encode_cursor


class JobListApi(APIView):
    class FilterSerializer(StrictQuerySerializer):
        status = serializers.MultipleChoiceField(
            choices=JobStatus.values, required=False, help_text="One or more statuses, comma-separated."
        )
        type = serializers.CharField(required=False, max_length=100, help_text="Job type.")
        queue = serializers.ChoiceField(choices=QueueName.values, required=False)
        since = serializers.DateTimeField(required=False, help_text="Only jobs created at or after this time.")
        owner = serializers.CharField(
            required=False,
            max_length=150,
            help_text="Staff with `queues.view_jobrecord` only: a username, or `*` for everyone's jobs.",
        )
        cursor = serializers.RegexField(
            JobCursorPagination.CURSOR_PATTERN, required=False, help_text="From `next` or `previous`."
        )
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
        page: list | None = paginator.paginate_queryset(jobs, request, view=self)
        return Response(
            {
                "ok": True,
                "results": JobItemSerializer(page, many=True, context={"user": request.user}).data,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
            }
        )


def _filtered_jobs(*, user, filters):
    owner = filters.get("owner")
    if owner is not None and not user_may_act_on_any_job(user=user, action="view"):
        raise PermissionDenied("Only staff with the permission to view jobs may list other users' jobs.")
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
    @extend_schema(
        operation_id="jobs_retrieve",
        parameters=[JOB_ID_PARAMETER],
        responses={200: JobOutputSerializer, **error_responses("job_not_found")},
    )
    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        return Response(_job_body(job, request))


class JobRetryApi(APIView):
    @extend_schema(
        operation_id="jobs_retry",
        parameters=[JOB_ID_PARAMETER],
        request=EmptyInputSerializer,
        responses={
            202: JobOutputSerializer,
            **error_responses(
                "validation_error", "job_not_found", "job_not_retryable", "queue_full", "queues_unavailable"
            ),
        },
    )
    def post(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user, action="retry")
        validate_input(EmptyInputSerializer, request.data)
        submission_guard(request, queue=job.queue)
        job = job_retry(job=job, actor=request.user)
        signals.operator_action.send(
            sender=None,
            request=request,
            action="job.retry",
            resource_type="job",
            resource_id=str(job.pk),
            details={"jobType": job.job_type},
        )
        return Response(_job_body(job, request), status=202)


class JobCancelApi(APIView):
    @extend_schema(
        operation_id="jobs_cancel",
        parameters=[JOB_ID_PARAMETER],
        request=EmptyInputSerializer,
        responses={
            200: JobOutputSerializer,
            **error_responses("validation_error", "job_not_found", "job_not_cancellable"),
        },
    )
    def post(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user, action="cancel")
        validate_input(EmptyInputSerializer, request.data)
        job = job_cancel(job=job, actor=request.user)
        signals.operator_action.send(
            sender=None,
            request=request,
            action="job.cancel",
            resource_type="job",
            resource_id=str(job.pk),
            details={"jobType": job.job_type},
        )
        return Response(_job_body(job, request))


class MeApi(APIView):
    # Any account, even one without roles: it is how a suspended client learns why it gets 403s.
    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField(default=True)
        username = serializers.CharField()
        roles = serializers.ListField(child=serializers.CharField())
        isStaff = serializers.BooleanField()

    @extend_schema(operation_id="me_retrieve", responses={200: OutputSerializer})
    def get(self, request):
        user = request.user
        return Response(
            {"ok": True, "username": user.get_username(), "roles": sorted(user_roles(user)), "isStaff": user.is_staff}
        )
