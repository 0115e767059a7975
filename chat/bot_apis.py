"""Chat bot endpoints: ask for a reply (a `chat` job) and read its status.

Watching the reply as it streams is the job system's business: `eventsUrl` points at
`/api/jobs/<id>/events` (queues.output_apis); cancelling is `POST /api/jobs/<id>/cancel`.
"""

from django.urls import reverse
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat.jobs import ChatBotInteractionJob
from chat.selectors import conversation_get_for_owner
from queues.api_support import accept_job
from queues.constants import JobStatus
from queues.selectors import JobNotFound, job_get_for_user
from slimy_site.exceptions import ValidationFailed


class ChatBotApi(APIView):
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
        ok = serializers.BooleanField(default=True)
        status = serializers.CharField()
        jobId = serializers.CharField(source="id")
        createdAt = serializers.DateTimeField(source="created_at")
        attempts = serializers.IntegerField()
        maxAttempts = serializers.IntegerField(source="max_attempts")

        def to_representation(self, job):
            data = super().to_representation(job)
            data["ok"] = True
            finished = serializers.DateTimeField().to_representation(job.finished_at) if job.finished_at else None
            if job.progress is not None:
                data["progress"] = job.progress
            if job.status == JobStatus.COMPLETED:
                data["result"] = job.result
                data["completedAt"] = finished
            elif job.status == JobStatus.FAILED:
                data["failedAt"] = finished
            elif job.status == JobStatus.CANCELLED:
                data["cancelledAt"] = finished
            if job.status != JobStatus.COMPLETED and job.error_message:
                data["error"] = {"code": job.error_code, "message": job.error_message}
            return data

    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        if job.job_type != ChatBotInteractionJob.name:
            raise JobNotFound()
        return Response(self.OutputSerializer(job).data)
