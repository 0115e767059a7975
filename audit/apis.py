"""The audit-log API (/api/audit-log): ingest (staff or service accounts), read, stats, reports, verify."""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import renderers, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from audit.events import MAX_EVENTS, EventPayload
from audit.models import AuditLog
from audit.reports import audit_report_csv
from audit.selectors import (
    CURSOR_PATTERN,
    audit_chain_state,
    audit_log_filter,
    audit_log_get,
    audit_log_page,
    audit_stats,
)
from queues.api.submit import JobAcceptedSerializer, accept_job, job_accepted_body, submit_responses
from queues.constants import FINAL_STATUSES, JobStatus
from queues.models import JobRecord
from queues.selectors import job_error_for_viewer
from slimy_site.exceptions import Conflict, NotFound, ValidationFailed
from slimy_site.negotiation import StrictFormatNegotiation
from slimy_site.roles import IsService, IsStaff
from slimy_site.schema import error_responses
from slimy_site.serializers import StrictSerializer, validate_input

DEFAULT_LIMIT = 50


class ReportNotFound(NotFound):
    code = "report_not_found"
    message = "Report not found."


class AuditLogOutputSerializer(serializers.ModelSerializer):
    eventId = serializers.UUIDField(source="event_id")
    occurredAt = serializers.DateTimeField(source="occurred_at")
    recordedAt = serializers.DateTimeField(source="recorded_at")
    actorId = serializers.IntegerField(source="actor_ref", allow_null=True)
    actorLabel = serializers.CharField(source="actor_label")
    actorExists = serializers.SerializerMethodField()
    resourceType = serializers.CharField(source="resource_type")
    resourceId = serializers.CharField(source="resource_id")
    userAgent = serializers.CharField(source="user_agent")
    sessionId = serializers.CharField(source="session_id")
    requestId = serializers.CharField(source="request_id")
    errorMessage = serializers.CharField(source="error_message")
    prevHash = serializers.CharField(source="prev_hash")
    rowHash = serializers.CharField(source="row_hash")

    class Meta:
        model = AuditLog
        fields = [
            "id",
            "eventId",
            "occurredAt",
            "recordedAt",
            "actorId",
            "actorLabel",
            "actorExists",
            "action",
            "resourceType",
            "resourceId",
            "details",
            "ip",
            "userAgent",
            "sessionId",
            "requestId",
            "success",
            "errorMessage",
            "prevHash",
            "rowHash",
        ]

    def get_actorExists(self, obj) -> bool:
        return obj.actor_id is not None


class RangeSerializer(serializers.Serializer):
    """`from` (inclusive) and `to` (exclusive); a `to` not after `from` is an empty range, not an error."""

    # `from` is a Python keyword: declared through the fields mapping below.
    def get_fields(self):
        return {
            "from": serializers.DateTimeField(required=False, source="occurred_from"),
            "to": serializers.DateTimeField(required=False, source="occurred_to"),
        }


def _parse_query(serializer_class, request):
    allowed = set(serializer_class().fields)
    unknown = sorted(set(request.query_params) - allowed - {"format"})
    if unknown:
        raise ValidationFailed(details={name: ["Unknown query parameter."] for name in unknown})
    serializer = serializer_class(data=request.query_params.dict())
    if not serializer.is_valid():
        raise ValidationFailed(details=serializer.errors)
    return serializer.validated_data


_EVENT_LIST = inline_serializer(
    "AuditEventList",
    fields={
        "ok": serializers.BooleanField(),
        "results": AuditLogOutputSerializer(many=True),
        "nextCursor": serializers.CharField(allow_null=True),
    },
)


class AuditEventsAcceptedSerializer(JobAcceptedSerializer):
    events = serializers.IntegerField(help_text="How many events the job will write.")

    class Meta:
        ref_name = "AuditEventsAccepted"


class AuditLogListApi(APIView):
    submit_methods = ("POST",)  # ingest: rate-limited in accept_job's one Redis round trip

    class FilterSerializer(RangeSerializer):
        def get_fields(self):
            fields = super().get_fields()
            fields.update(
                actor=serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1),
                # An empty value filters nothing (as if the parameter were absent).
                action=serializers.CharField(required=False, allow_blank=True, max_length=100),
                resourceType=serializers.CharField(
                    required=False, allow_blank=True, max_length=100, source="resource_type"
                ),
                resourceId=serializers.CharField(
                    required=False, allow_blank=True, max_length=255, source="resource_id"
                ),
                # Only the JSON spellings the schema's boolean allows (DRF would also take "null", "yes", "1").
                success=serializers.ChoiceField(choices=["true", "false"], required=False),
                requestId=serializers.CharField(required=False, allow_blank=True, max_length=64, source="request_id"),
                cursor=serializers.CharField(required=False),
                limit=serializers.IntegerField(
                    required=False, min_value=1, max_value=MAX_EVENTS, default=DEFAULT_LIMIT
                ),
            )
            return fields

    def get_permissions(self):
        return [IsService()] if self.request.method == "POST" else [IsStaff()]

    @extend_schema(
        summary="List audit events (staff)",
        operation_id="audit_log_list",
        responses={200: _EVENT_LIST, **error_responses("validation_error")},
        parameters=[
            OpenApiParameter("actor", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}),
            OpenApiParameter("action", {"type": "string", "maxLength": 100}),
            OpenApiParameter("resourceType", {"type": "string", "maxLength": 100}),
            OpenApiParameter("resourceId", {"type": "string", "maxLength": 255}),
            OpenApiParameter("success", OpenApiTypes.BOOL),
            OpenApiParameter("from", OpenApiTypes.DATETIME),
            OpenApiParameter("to", OpenApiTypes.DATETIME),
            OpenApiParameter("requestId", {"type": "string", "maxLength": 64}),
            OpenApiParameter(
                "cursor",
                {"type": "string", "pattern": CURSOR_PATTERN},
                description="`nextCursor` of the previous page.",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
                description=f"1-{MAX_EVENTS}, default {DEFAULT_LIMIT}",
            ),
        ],
    )
    def get(self, request):
        params = dict(_parse_query(self.FilterSerializer, request))
        cursor, limit = params.pop("cursor", None), params.pop("limit")
        if "success" in params:
            params["success"] = params["success"] == "true"
        rows, next_cursor = audit_log_page(qs=audit_log_filter(**params), cursor=cursor, limit=limit)
        return Response(
            {"ok": True, "results": AuditLogOutputSerializer(rows, many=True).data, "nextCursor": next_cursor}
        )

    @extend_schema(
        summary="Record one audit event or a list of up to 1,000 (staff or service accounts)",
        request=EventPayload,
        responses=submit_responses(AuditEventsAcceptedSerializer, "too_many_events"),
    )
    def post(self, request):
        data = request.data
        if isinstance(data, dict):
            job_type, events = "log_event", [data]
        elif isinstance(data, list):
            if not data:
                raise ValidationFailed(details={"events": ["Send at least one event."]})
            if len(data) > MAX_EVENTS:
                raise ValidationFailed(
                    f"At most {MAX_EVENTS} events per request.",
                    code="too_many_events",
                    details={"events": [f"At most {MAX_EVENTS} events per request."]},
                )
            job_type, events = "log_events_bulk", data
        else:
            raise ValidationFailed(details={"body": ["Send an event object or a list of events."]})
        for event in events:
            if isinstance(event, dict):
                event.setdefault("requestId", getattr(request, "request_id", "") or "")
                if "actorId" not in event:  # the caller itself acted
                    event["actorId"] = request.user.pk
                    event.setdefault("actorLabel", request.user.get_username())
        payload = events[0] if job_type == "log_event" else {"events": events}
        return accept_job(request, job_type=job_type, payload=payload, extra_body={"events": len(events)})


class AuditLogDetailApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        summary="One audit event (staff)",
        operation_id="audit_log_detail",
        responses={200: AuditLogOutputSerializer, **error_responses("audit_event_not_found")},
    )
    def get(self, request, event_id: int):
        return Response(AuditLogOutputSerializer(audit_log_get(event_id=event_id)).data)


class AuditLogStatsApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        summary="Totals, success rate and counts by action (staff)",
        parameters=[OpenApiParameter("from", OpenApiTypes.DATETIME), OpenApiParameter("to", OpenApiTypes.DATETIME)],
        responses={200: OpenApiTypes.OBJECT, **error_responses("validation_error")},
    )
    def get(self, request):
        params = _parse_query(RangeSerializer, request)
        return Response({"ok": True, **audit_stats(**params)})


class AuditReportCreateApi(APIView):
    permission_classes = [IsStaff]
    submit_methods = ("POST",)  # rate-limited in accept_job's one Redis round trip

    class InputSerializer(StrictSerializer):
        occurredFrom = serializers.DateTimeField(help_text="Start of the range (inclusive).")
        occurredTo = serializers.DateTimeField(
            help_text="End of the range (exclusive); not after occurredFrom: an empty report."
        )

    @extend_schema(summary="Start an audit report job (staff)", request=InputSerializer, responses=submit_responses())
    def post(self, request):
        if not isinstance(request.data, dict):
            raise ValidationFailed(details={"body": ["Send a JSON object."]})
        validate_input(self.InputSerializer, request.data)  # types and unknown fields, before a job exists
        return accept_job(request, job_type="audit_report", payload=dict(request.data))


class CsvRenderer(renderers.BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, str):
            return data.encode(self.charset)
        return json.dumps(data, default=str).encode(self.charset)  # errors stay readable


class AuditReportDetailApi(APIView):
    permission_classes = [IsStaff]
    renderer_classes = [renderers.JSONRenderer, CsvRenderer]
    content_negotiation_class = StrictFormatNegotiation

    @extend_schema(
        summary="An audit report: JSON, or CSV with ?format=csv (only the staff member who asked for it)",
        parameters=[
            OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH),
            OpenApiParameter("format", OpenApiTypes.STR, enum=["json", "csv"]),
        ],
        responses={
            200: OpenApiTypes.OBJECT,
            202: JobAcceptedSerializer,
            **error_responses("report_not_found", "not_found", "report_not_available"),
        },
    )
    def get(self, request, job_id: str):
        job = _report_job(job_id=job_id, user=request.user)
        if job.status not in FINAL_STATUSES:
            return Response(job_accepted_body(request, job), status=202)
        if job.status != JobStatus.COMPLETED or not isinstance(job.result, dict):
            error = job_error_for_viewer(job=job, viewer=request.user)
            raise Conflict(
                f"The report job is {job.status}: {error['message'] if error else 'no result'}.",
                code="report_not_available",
            )
        if request.accepted_renderer.format == "csv":
            response = HttpResponse(audit_report_csv(job.result), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="audit-report-{job.id}.csv"'
            return response
        return Response({"ok": True, "jobId": str(job.id), "report": job.result})


def _report_job(*, job_id: str, user) -> JobRecord:
    try:
        return JobRecord.objects.get(pk=job_id, job_type="audit_report", owner=user)
    except (JobRecord.DoesNotExist, DjangoValidationError, ValueError, TypeError):
        raise ReportNotFound() from None


class AuditChainVerifyApi(APIView):
    permission_classes = [IsStaff]

    @extend_schema(
        summary="Walk the hash chain; ok=false names the first altered, inserted or removed row (staff)",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        report = audit_chain_state()
        body = report.as_dict()
        if not report.ok:
            body.update(error="audit_chain_broken", message=report.message)
        return Response(body)
