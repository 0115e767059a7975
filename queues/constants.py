"""Names shared by every part of the job system: queues, statuses, priorities."""

import datetime

from django.db import models


class QueueName(models.TextChoices):
    CHAT = "chat", "chat"
    DATABASE = "database", "database"
    AUDIT = "audit", "audit"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    SCHEDULED = "scheduled", "scheduled"
    STARTED = "started", "started"
    RETRYING = "retrying", "retrying"
    COMPLETED = "completed", "completed"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


# Statuses a job never leaves.
FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
# Statuses in which the job waits in Redis for a worker (or the scheduler).
WAITING_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING})


# A delivery may start a delayed job or a retry at most this early (RQ's scheduler keeps whole
# seconds); an earlier one (a duplicate push) is skipped and the scheduled copy runs on time.
DUE_TOLERANCE = datetime.timedelta(seconds=1)


class Priority(models.TextChoices):
    HIGH = "high", "high"
    NORMAL = "normal", "normal"
    LOW = "low", "low"


# Workers drain every queue's high list before any normal one, and normal before low.
PRIORITY_ORDER = (Priority.HIGH, Priority.NORMAL, Priority.LOW)


def rq_queue_name(queue: str, priority: str = Priority.NORMAL) -> str:
    """The RQ list a job of this queue and priority waits in (`chat`, `chat.high`, `chat.low`)."""
    return queue if priority == Priority.NORMAL else f"{queue}.{priority}"


def rq_queue_names() -> list[str]:
    return [rq_queue_name(q, p) for q in QueueName.values for p in PRIORITY_ORDER]


def base_queue_name(rq_name: str) -> str:
    return rq_name.split(".", 1)[0]
