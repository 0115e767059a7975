"""Chat bot endpoints: ask for a reply (a `chat` job) and read its status.

Watching the reply as it streams is the job system's business: `eventsUrl` points at
`/api/jobs/<id>/events` (queues.output_apis); cancelling is `POST /api/jobs/<id>/cancel`.
"""

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.jobs import ChatBotInteractionJob, ChatBotPayload
from chat.selectors import conversation_get_for_owner
from queues.api_support import accept_job
from queues.apis import JOB_ID_PARAMETER, JobErrorSerializer, JobItemSerializer
from queues.constants import JobStatus
from queues.selectors import JobNotFound, job_get_for_user
from slimy_site.exceptions import ValidationFailed
from slimy_site.schema import SUBMIT_ERROR_CODES, error_responses
from slimy_site.serializers import ErrorSerializer

CONVERSATION_NOT_FOUND = OpenApiResponse(
    response=ErrorSerializer, description="Error codes: `conversation_not_found`",
    examples=[OpenApiExample("conversation_not_found", response_only=True, status_codes=["404"], value={
        "ok": False, "error": "conversation_not_found", "message": "Conversation not found."})],
)


class ChatBotAcceptedSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    jobId = serializers.UUIDField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    statusUrl = serializers.URLField(help_text="GET /api/chat/jobs/<jobId>.")
    eventsUrl = serializers.URLField(help_text="Server-Sent Events of the reply as it streams.")
    outputUrl = serializers.URLField(help_text="The reply's output log, by cursor.")


class ChatBotApi(APIView):
    @extend_schema(operation_id="chat_bot_create", tags=["chat"], request=ChatBotPayload, responses={
        202: ChatBotAcceptedSerializer, 200: ChatBotAcceptedSerializer, 404: CONVERSATION_NOT_FOUND,
        **error_responses(*SUBMIT_ERROR_CODES)})
    def post(self, request):
        try:
            payload = ChatBotInteractionJob.validate(request.data)
        except serializers.ValidationError as exc:
            raise ValidationFailed(details=exc.detail) from exc
        if payload.get("conversationId"):
            # Refuse at once rather than after a trip through the queue.
            conversation_get_for_owner(conversation_id=payload["conversationId"], owner_id=request.user.pk)

        def links(job):
            return {
                "statusUrl": request.build_absolute_uri(reverse("chat-bot-job", kwargs={"job_id": job.id})),
                "eventsUrl": request.build_absolute_uri(reverse("job-events", kwargs={"job_id": job.id})),
                "outputUrl": request.build_absolute_uri(reverse("job-output", kwargs={"job_id": job.id})),
            }

        return accept_job(request, job_type=ChatBotInteractionJob.name, payload=payload, extra_body=links)


class ChatBotJobApi(APIView):
    class OutputSerializer(serializers.Serializer):
        """The fields after `maxAttempts` are present only when they apply to the status."""

        ok = serializers.BooleanField()
        status = serializers.ChoiceField(choices=JobStatus.choices)
        jobId = serializers.UUIDField()
        createdAt = serializers.DateTimeField()
        attempts = serializers.IntegerField()
        maxAttempts = serializers.IntegerField()
        progress = serializers.JSONField(required=False)
        result = serializers.JSONField(
            required=False, help_text="{reply, usedFallback, fallbackReason?, model, usage, conversationId?}")
        completedAt = serializers.DateTimeField(required=False)
        failedAt = serializers.DateTimeField(required=False)
        cancelledAt = serializers.DateTimeField(required=False)
        error = JobErrorSerializer(required=False)

        def to_representation(self, job):
            iso = serializers.DateTimeField().to_representation
            data = {"ok": True, "status": job.status, "jobId": str(job.pk), "createdAt": iso(job.created_at),
                    "attempts": job.attempts, "maxAttempts": job.max_attempts}
            if job.progress is not None:
                data["progress"] = job.progress
            finished = iso(job.finished_at) if job.finished_at else None
            if job.status == JobStatus.COMPLETED:
                data["result"] = job.result
                data["completedAt"] = finished
            elif job.status == JobStatus.FAILED:
                data["failedAt"] = finished
            elif job.status == JobStatus.CANCELLED:
                data["cancelledAt"] = finished
            if job.status != JobStatus.COMPLETED and job.error_message:
                # Same rule as the generic job endpoints: untyped errors are hidden from owners.
                data["error"] = JobItemSerializer(context=self.context).get_error(job)
            return data

    @extend_schema(operation_id="chat_bot_job_retrieve", tags=["chat"], parameters=[JOB_ID_PARAMETER],
                   responses={200: OutputSerializer, **error_responses("job_not_found")})
    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        if job.job_type != ChatBotInteractionJob.name:
            raise JobNotFound()
        return Response(self.OutputSerializer(job, context={"user": request.user}).data)
