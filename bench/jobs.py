"""Job types used only by the benchmarks (loaded through EXTRA_JOB_MODULES=bench.jobs)."""

import asyncio
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


NOOP_JOB_TYPES = {
    QueueName.DATABASE: "bench_noop_database",
    QueueName.CHAT: "bench_noop_chat",
    QueueName.AUDIT: "bench_noop_audit",
}


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


class GuildReplyPayload(serializers.Serializer):
    guildId = serializers.CharField(max_length=64)
    seconds = serializers.FloatField(min_value=0, max_value=10)


class GuildReplyJob(JobDefinition):
    """A chat-queue job of a guild (its tenant) that waits `seconds` the way an LLM reply does: a coroutine
    awaiting I/O, so a worker runs CHAT_CONCURRENCY of them at once (the fairness scenario)."""

    name = "bench_guild_reply"
    queue = QueueName.CHAT
    payload_serializer = GuildReplyPayload
    tenant_field = "guildId"

    async def run(self, payload, context):
        await asyncio.sleep(payload["seconds"])
        return None
