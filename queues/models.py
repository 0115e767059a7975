"""The job ledger: one JobRecord per job a user or staff member can see, plus its attempts."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from queues.constants import JobStatus, Priority, QueueName


def is_job_id(value: str) -> bool:
    """Whether an id read from Redis can be a JobRecord key (a uuid), before it goes into a query."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class JobRecord(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job_type = models.CharField(max_length=100)
    queue = models.CharField(max_length=32, choices=QueueName.choices)
    # No index of its own: `job_owner_created` (owner, -created_at) serves every look-up by owner, and each
    # index more is one more entry written by every submission and every status change.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
        db_index=False,
    )
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    progress = models.JSONField(null=True, blank=True)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    result = models.JSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")
    request_id = models.CharField(max_length=64, blank=True, default="")
    # NULL, not "", for no key: the unique constraint below applies to rows that have one.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="")
    worker_name = models.CharField(max_length=255, blank=True, default="")
    # Who the job is fair-shared for (a guild, else `user:<id>`); set at enqueue by the definition.
    tenant = models.CharField(max_length=100, blank=True, default="")
    # W3C trace context (traceparent/tracestate) of the submission, so the job's spans join its trace.
    trace_context = models.JSONField(default=dict, blank=True)

    # Not a column: job_enqueue sets it on the record it returns (True: an earlier submission with the same
    # idempotency key, returned instead of a new job).
    replayed: bool = False

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="job_owner_created"),
            models.Index(fields=["status", "queue"], name="job_status_queue"),
            models.Index(fields=["queue", "status", "created_at"], name="job_queue_status_created"),
            models.Index(fields=["job_type", "-created_at"], name="job_type_created"),
            models.Index(fields=["request_id"], name="job_request_id"),
            models.Index(fields=["-created_at"], name="job_created"),
            # Dashboard figures over the last hour and retention scan finished records by time.
            models.Index(fields=["status", "-finished_at"], name="job_status_finished"),
            models.Index(fields=["tenant", "-created_at"], name="job_tenant_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="job_owner_idempotency_key_unique",
            ),
        ]
        permissions = [
            ("retry_jobrecord", "Can retry jobs"),
            ("cancel_jobrecord", "Can cancel jobs"),
            ("manage_queues", "Can manage queues"),
        ]

    def __str__(self):
        return f"{self.job_type} {self.id} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None


class JobAttempt(models.Model):
    class Outcome(models.TextChoices):
        RUNNING = "running", "running"
        COMPLETED = "completed", "completed"
        RETRIED = "retried", "retried"
        FAILED = "failed", "failed"
        CANCELLED = "cancelled", "cancelled"
        ABANDONED = "abandoned", "abandoned (worker died)"

    # Indexed by `job_attempt_number_unique` (job, number), which serves every look-up by job.
    job = models.ForeignKey(JobRecord, on_delete=models.CASCADE, related_name="attempt_history", db_index=False)
    number = models.PositiveIntegerField()
    worker_name = models.CharField(max_length=255, blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error_message = models.TextField(blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="job_attempt_number_unique")]

    def __str__(self):
        return f"attempt {self.number} of {self.job_id}: {self.outcome}"

    @property
    def seconds(self) -> float:
        """How long the attempt ran, or has run so far."""
        return ((self.finished_at or timezone.now()) - self.started_at).total_seconds()
