"""Writes to the job ledger and the queues (PostgreSQL is the source of truth; Redis carries ids).

- enqueue: job_enqueue / job_push — written in the caller's transaction, pushed on commit.
- batch: start and complete for many jobs at once, one statement each (the worker runtime's lanes).
- transitions: what the runner, the workers and the reconciler record (start, complete, fail, recover).
- operations: what users and staff do (retry, cancel, copies, pause, retention).
"""

from queues.services.batch import job_complete_batch, job_start_batch
from queues.services.enqueue import (
    IDEMPOTENCY_WINDOW,
    RUNNER,
    IdempotencyKeyReused,
    UnknownJobType,
    job_enqueue,
    job_push,
    payload_fingerprint,
)
from queues.services.operations import (
    job_cancel,
    job_delete_from_redis,
    job_records_clean,
    job_records_expire,
    job_requeue_copy,
    job_retry,
    job_retry_failed_of_type,
    queue_pause,
    queue_resume,
)
from queues.services.transitions import (
    job_attempt_failed,
    job_attempt_guard,
    job_complete,
    job_complete_waiting,
    job_progress_set,
    job_recover_abandoned,
    job_start,
    job_waiting_claim,
)

__all__ = [
    "IDEMPOTENCY_WINDOW",
    "IdempotencyKeyReused",
    "RUNNER",
    "UnknownJobType",
    "job_attempt_failed",
    "job_attempt_guard",
    "job_cancel",
    "job_complete",
    "job_complete_batch",
    "job_complete_waiting",
    "job_delete_from_redis",
    "job_enqueue",
    "job_progress_set",
    "job_push",
    "job_records_clean",
    "job_records_expire",
    "job_recover_abandoned",
    "job_requeue_copy",
    "job_retry",
    "job_retry_failed_of_type",
    "job_start",
    "job_start_batch",
    "job_waiting_claim",
    "payload_fingerprint",
    "queue_pause",
    "queue_resume",
]
