"""Generic job endpoints: read, list, retry, cancel. Another user's job is a 404, never a 403."""

from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from queues.models import JobRecord
from queues.selectors import job_get_for_user
from queues.services import job_cancel, job_retry


class JobOutputSerializer(serializers.ModelSerializer):
    ok = serializers.SerializerMethodField()
    jobId = serializers.UUIDField(source="id")
    jobType = serializers.CharField(source="job_type")
    maxAttempts = serializers.IntegerField(source="max_attempts")
    createdAt = serializers.DateTimeField(source="created_at")
    startedAt = serializers.DateTimeField(source="started_at")
    finishedAt = serializers.DateTimeField(source="finished_at")
    error = serializers.SerializerMethodField()

    class Meta:
        model = JobRecord
        fields = ["ok", "jobId", "jobType", "queue", "status", "priority", "attempts", "maxAttempts", "progress",
                  "createdAt", "startedAt", "finishedAt", "result", "error"]

    def get_ok(self, obj) -> bool:
        return True

    def get_error(self, obj) -> dict | None:
        if not obj.error_message:
            return None
        return {"code": obj.error_code, "message": obj.error_message}


class JobDetailApi(APIView):
    def get(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        return Response(JobOutputSerializer(job).data)


class JobRetryApi(APIView):
    def post(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        return Response(JobOutputSerializer(job_retry(job=job, actor=request.user)).data, status=202)


class JobCancelApi(APIView):
    def post(self, request, job_id):
        job = job_get_for_user(job_id=job_id, user=request.user)
        return Response(JobOutputSerializer(job_cancel(job=job, actor=request.user)).data)
