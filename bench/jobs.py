"""Job types used only by the benchmarks (loaded through EXTRA_JOB_MODULES=bench.jobs)."""

import time

from rest_framework import serializers

from queues.constants import QueueName
from queues.definitions import JobDefinition


class NoopDatabaseJob(JobDefinition):
    name = "bench_noop_database"
    queue = QueueName.DATABASE

    def run(self, payload, context):
        return None


class NoopChatJob(JobDefinition):
    name = "bench_noop_chat"
    queue = QueueName.CHAT

    def run(self, payload, context):
        return None


class NoopAuditJob(JobDefinition):
    name = "bench_noop_audit"
    queue = QueueName.AUDIT

    def run(self, payload, context):
        return None


NOOP_JOB_TYPES = {QueueName.DATABASE: "bench_noop_database", QueueName.CHAT: "bench_noop_chat",
                  QueueName.AUDIT: "bench_noop_audit"}


class StampPayload(serializers.Serializer):
    key = serializers.CharField(max_length=100)
    seq = serializers.IntegerField(min_value=0)


class StampJob(JobDefinition):
    """Records when its handler started, for the pickup scenario."""

    name = "bench_stamp"
    queue = QueueName.DATABASE
    payload_serializer = StampPayload

    def run(self, payload, context):
        from queues.connections import get_connection

        get_connection().rpush(payload["key"], f"{payload['seq']}:{time.time()}")
        return None
