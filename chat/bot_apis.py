"""Chat bot endpoints: ask for a reply (a `chat` job) and read its status.

Watching the reply as it streams is the job system's business: `eventsUrl` points at
`/api/jobs/<id>/events` (queues.api.output); cancelling is `POST /api/jobs/<id>/cancel`.
"""

import functools

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.jobs import ChatBotInteractionJob, ChatBotPayload
from chat.selectors import ConversationNotFound, conversation_get_for_owner
from queues.api.jobs import JOB_ID_PARAMETER, JobErrorSerializer
from queues.api.quick_submit import QuickSubmission, QuickSubmitMixin
from queues.api.submit import JobAcceptedSerializer, accept_job, submit_responses
from queues.constants import JobStatus
from queues.selectors import JobNotFound, job_error_for_viewer, job_get_for_user
from slimy_site.exceptions import ValidationFailed
from slimy_site.roles import IsMember
from slimy_site.schema import error_responses


class ChatBotAcceptedSerializer(JobAcceptedSerializer):
    statusUrl = serializers.URLField(help_text="GET /api/chat/jobs/<jobId>.")
    eventsUrl = serializers.URLField(help_text="Server-Sent Events of the reply as it streams.")
    outputUrl = serializers.URLField(help_text="The reply's output log, by cursor.")

    class Meta:
        ref_name = "ChatBotAccepted"


class ChatBotApi(QuickSubmitMixin, APIView):
    permission_classes = [IsMember]
    submit_methods = ("POST",)  # rate-limited in accept_job's one Redis round trip

    @extend_schema(
        operation_id="chat_bot_create",
        tags=["chat"],
        request=ChatBotPayload,
        responses=submit_responses(ChatBotAcceptedSerializer, "conversation_not_found"),
    )
    def post(self, request):
        try:
            payload = ChatBotInteractionJob.validate(request.data)
        except serializers.ValidationError as exc:
            raise ValidationFailed(details=exc.detail) from exc
        if payload.get("conversationId"):
            # Refuse at once rather than after a trip through the queue.
            conversation_get_for_owner(conversation_id=payload["conversationId"], owner_id=request.user.pk)
        return accept_job(
            request, job_type=ChatBotInteractionJob.name, payload=payload, extra_body=functools.partial(_links, request)
        )

    def quick_submission(self, request, data):
        try:
            payload = ChatBotInteractionJob.validate(data)
            if payload.get("conversationId"):
                conversation_get_for_owner(conversation_id=payload["conversationId"], owner_id=request.user.pk)
        except (serializers.ValidationError, ConversationNotFound):
            return None  # DRF's path words the 400 or answers the 404
        return QuickSubmission(ChatBotInteractionJob.name, payload, functools.partial(_links, request))


def _links(request, job) -> dict:
    return {
        "statusUrl": request.build_absolute_uri(reverse("chat-bot-job", kwargs={"job_id": job.id})),
        "eventsUrl": request.build_absolute_uri(reverse("job-events", kwargs={"job_id": job.id})),
        "outputUrl": request.build_absolute_uri(reverse("job-output", kwargs={"job_id": job.id})),
    }


class ChatBotJobApi(APIView):
    permission_classes = [IsMember]

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
            required=False, help_text="{reply, usedFallback, fallbackReason?, model, usage, conversationId?}"
        )
        completedAt = serializers.DateTimeField(required=False)
        failedAt = serializers.DateTimeField(required=False)
        cancelledAt = serializers.DateTimeField(required=False)
        error = JobErrorSerializer(required=False)

        def to_representation(self, job):
            iso = serializers.DateTimeField().to_representation
            data = {
                "ok": True,
                "status": job.status,
                "jobId": str(job.pk),
                "createdAt": iso(job.created_at),
                "attempts": job.attempts,
                "maxAttempts": job.max_attempts,
            }
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
                data["error"] = job_error_for_viewer(job=job, viewer=self.context.get("user"))
            return data

    @extend_schema(
        operation_id="chat_bot_job_retrieve",
        tags=["chat"],
        parameters=[JOB_ID_PARAMETER],
        responses={200: OutputSerializer, **error_responses("job_not_found")},
    )
    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        if job.job_type != ChatBotInteractionJob.name:
            raise JobNotFound()
        return Response(self.OutputSerializer(job, context={"user": request.user}).data)
