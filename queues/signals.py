"""Hooks the job system fires; metrics and others connect to them (nothing here depends on them)."""

from django.dispatch import Signal

# job (sent by JobRecord on every submission: its receivers are cached per sender)
job_enqueued = Signal(use_caching=True)
# job, wait (seconds from due time to start)
job_started = Signal()
# job, outcome ("completed" | "failed" | "retried" | "cancelled"), duration (seconds or None)
job_finished = Signal()

# A person or client acted on jobs or queues (admin action, API retry/cancel). The audit app records it.
# request, action ("admin.job_retry", "job.cancel", ...), resource_type, resource_id, details, success, error_message
operator_action = Signal()

# A long-lived worker (the runtime): `worker_started` once, then `worker_heartbeat` about once a second
# from its heartbeat thread, and `worker_stopped` when its work ends (metrics flush what they hold).
worker_started = Signal()
worker_heartbeat = Signal()
worker_stopped = Signal()
