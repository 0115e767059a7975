"""Audit job types (queue `audit`): one JobDefinition per type; each run() calls one service."""

from rest_framework import serializers

from audit.events import EventPayload, EventsPayload
from queues.constants import QueueName
from queues.definitions import JobDefinition, RetryPolicy


class LogEventJob(JobDefinition):
    """One event; the run also writes other waiting log_event jobs with it (see audit_log_event_run)."""

    name = "log_event"
    queue = QueueName.AUDIT
    payload_serializer = EventPayload
    timeout = 60
    retry = RetryPolicy(max_attempts=5, backoff_base=2)

    def run(self, payload, context):
        from audit.services import audit_log_event_run
        from queues.runner import _worker_name

        return audit_log_event_run(event=payload, job_id=context.job_id, worker_name=_worker_name())


class LogEventsBulkJob(JobDefinition):
    name = "log_events_bulk"
    queue = QueueName.AUDIT
    payload_serializer = EventsPayload
    timeout = 120
    retry = RetryPolicy(max_attempts=5, backoff_base=2)

    def run(self, payload, context):
        from audit.services import audit_events_bulk_run

        return audit_events_bulk_run(events=payload["events"])
