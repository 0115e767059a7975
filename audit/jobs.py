"""Audit job types (queue `audit`): one JobDefinition per type; each run() calls one service."""

import datetime as dt

from django.utils.dateparse import parse_datetime
from rest_framework import serializers

from audit.events import (
    EventPayload,
    EventsPayload,
    event_clean_json,
    event_stored,
    events_clean,
    events_stored,
)
from queues.constants import QueueName
from queues.definitions import EmptyPayload, JobDefinition, PermanentJobError, RetryPolicy


class LogEventJob(JobDefinition):
    """One event; the run also writes other waiting log_event jobs with it (see audit_log_event_run)."""

    name = "log_event"
    queue = QueueName.AUDIT
    internal = True  # one per API action: plumbing of the audit trail, not a job people look for
    payload_serializer = EventPayload
    timeout = 60
    retry = RetryPolicy(max_attempts=5, backoff_base=2)

    @classmethod
    def validate(cls, payload):
        # Plain-code validation (the serializer's rules): it runs again for every event a worker writes.
        if not isinstance(payload, dict):
            raise serializers.ValidationError({"payload": ["Must be a JSON object."]})
        return event_clean_json(payload)

    @classmethod
    def validate_stored(cls, payload):
        # Validated and redacted when enqueued: only the shape is checked again (see event_stored).
        return event_stored(payload)

    def run(self, payload, context):
        from audit.services import audit_log_event_run

        return audit_log_event_run(event=payload, job_id=context.job_id, worker_name=context.worker_name)


class LogEventsBulkJob(JobDefinition):
    name = "log_events_bulk"
    queue = QueueName.AUDIT
    internal = True
    # On the audit queue's thread pool (AUDIT_CONCURRENCY threads): an append waits on PostgreSQL (its COPY)
    # for about half its time, during which another bulk job prepares its rows.
    blocking = True
    payload_serializer = EventsPayload
    timeout = 120
    retry = RetryPolicy(max_attempts=5, backoff_base=2)

    @classmethod
    def validate(cls, payload):
        return events_clean(payload)

    @classmethod
    def validate_stored(cls, payload):
        # Validated and redacted when enqueued: only the shape is checked again (see events_stored).
        return events_stored(payload)

    def run(self, payload, context):
        from audit.services import audit_events_bulk_run

        return audit_events_bulk_run(events=payload["events"])


class AuditDrainJob(JobDefinition):
    """Moves the ingest buffer (events from audit_event_record) into the chain in large batches.

    Enqueued on demand when events are staged (at most one waiting at a time, see
    audit_drain_request) and by the periodic safety net (audit_drain_ensure).
    """

    name = "audit_drain"
    queue = QueueName.AUDIT
    payload_serializer = EmptyPayload
    # On the audit queue's thread pool, like bulk jobs: two drains overlap one's COPY with the other's
    # reading and preparing of its batch.
    blocking = True
    timeout = 300
    retry = RetryPolicy(max_attempts=5, backoff_base=2)

    def run(self, payload, context):
        from audit.services import audit_staged_drain

        return audit_staged_drain()


class CleanupPayload(serializers.Serializer):
    retentionDays = serializers.IntegerField(min_value=1, required=False, help_text="Overrides AUDIT_RETENTION_DAYS.")
    scheduled = serializers.BooleanField(
        required=False, default=False, help_text="A daily run: schedules the next one when it finishes."
    )


class AuditCleanupJob(JobDefinition):
    name = "audit_cleanup"
    queue = QueueName.AUDIT
    payload_serializer = CleanupPayload
    timeout = 3600
    retry = RetryPolicy(max_attempts=3, backoff_base=60)

    def run(self, payload, context):
        from audit.retention import audit_cleanup_run

        return audit_cleanup_run(retention_days=payload.get("retentionDays"), scheduled=payload["scheduled"])


class ReportPayload(serializers.Serializer):
    occurredFrom = serializers.DateTimeField(help_text="Start of the range (inclusive).")
    occurredTo = serializers.DateTimeField(help_text="End of the range (exclusive).")

    # No cross-field rule: an `occurredTo` not after `occurredFrom` is an empty range (an empty report),
    # and any span is allowed (retention bounds the rows a report can read), so every request the
    # schema allows is accepted.


class AuditReportJob(JobDefinition):
    name = "audit_report"
    queue = QueueName.AUDIT
    payload_serializer = ReportPayload
    timeout = 600
    retry = RetryPolicy(max_attempts=2, backoff_base=5)
    result_ttl = 24 * 3600

    def run(self, payload, context):
        from audit.reports import audit_report_build

        return audit_report_build(
            occurred_from=_datetime(payload["occurredFrom"]), occurred_to=_datetime(payload["occurredTo"])
        )


def _datetime(value: str) -> dt.datetime:
    parsed = parse_datetime(value)
    if parsed is None:  # the payload serializer wrote it, so only a hand-made record gets here
        raise PermanentJobError(f"Not a datetime: {value!r}.", code="invalid_payload")
    return parsed
