"""Job types used only by the tests of the job infrastructure (loaded through EXTRA_JOB_MODULES)."""

import asyncio
import os
import time

from rest_framework import serializers

from queues.constants import QueueName
from queues.definitions import JobDefinition, PermanentJobError, RetryPolicy, TransientJobError


def _redis():
    from queues.connections import get_connection

    return get_connection()


def record_hook_process():
    """A periodic hook (PERIODIC_HOOKS) noting which process ran it, against which database, at which priority,
    started when."""
    import psutil
    from django.db import connection

    priority = os.getpriority(os.PRIO_PROCESS, 0)
    started = psutil.Process().create_time()
    _redis().rpush("test:hooks", f"{os.getpid()} {connection.settings_dict['NAME']} {priority} {started}")


class EchoPayload(serializers.Serializer):
    value = serializers.CharField(max_length=100)
    count = serializers.IntegerField(min_value=0, max_value=10, required=False, default=1)


class EchoJob(JobDefinition):
    name = "test_echo"
    queue = QueueName.DATABASE
    payload_serializer = EchoPayload

    def run(self, payload, context):
        _redis().rpush("test:ran", f"{payload['value']}:{context.attempt}")
        return {"echo": payload["value"] * payload["count"]}


class TagPayload(serializers.Serializer):
    tag = serializers.CharField()


class RecordOrderJob(JobDefinition):
    name = "test_record"
    queue = QueueName.AUDIT
    payload_serializer = TagPayload

    def run(self, payload, context):
        _redis().rpush("test:order", payload["tag"])
        return {"tag": payload["tag"]}


class FlakyPayload(serializers.Serializer):
    succeed_on = serializers.IntegerField(min_value=1)
    tag = serializers.CharField(required=False, default="flaky")


class FlakyJob(JobDefinition):
    """Fails with a transient error until its `succeed_on`-th attempt."""

    name = "test_flaky"
    queue = QueueName.DATABASE
    payload_serializer = FlakyPayload
    retry = RetryPolicy(max_attempts=3, backoff_base=1)

    def run(self, payload, context):
        _redis().rpush(f"test:attempts:{payload['tag']}", context.attempt)
        if context.attempt < payload["succeed_on"]:
            raise TransientJobError(f"attempt {context.attempt} failed")
        return {"succeededOn": context.attempt}


class PermanentFailJob(JobDefinition):
    name = "test_permanent"
    queue = QueueName.DATABASE
    payload_serializer = TagPayload

    def run(self, payload, context):
        _redis().rpush("test:permanent", context.attempt)
        raise PermanentJobError("this can never work", code="never_works")


class SleepPayload(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=120)
    tag = serializers.CharField(required=False, default="sleep")
    cooperative = serializers.BooleanField(required=False, default=True)  # check for cancellation while sleeping


class SleepJob(JobDefinition):
    """Sleeps in small steps, checking for cancellation; marks its start and its end in Redis."""

    name = "test_sleep"
    queue = QueueName.CHAT
    payload_serializer = SleepPayload
    retry = RetryPolicy(max_attempts=3, backoff_base=1)
    timeout = 180
    blocking = True  # it sleeps: the runtime runs it on the queue's thread pool

    def run(self, payload, context):
        conn = _redis()
        conn.rpush(f"test:started:{payload['tag']}", f"{os.getpid()}:{context.attempt}")
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            if payload["cooperative"]:
                context.check_cancelled()
            time.sleep(0.05)
        conn.rpush(f"test:done:{payload['tag']}", context.attempt)
        return {"slept": payload["seconds"]}


class CrashJob(JobDefinition):
    """Kills its own process, as a segfault or OOM kill would."""

    name = "test_crash"
    queue = QueueName.CHAT
    payload_serializer = TagPayload
    retry = RetryPolicy(max_attempts=2, backoff_base=1)

    def run(self, payload, context):
        _redis().rpush(f"test:crash:{payload['tag']}", context.attempt)
        os._exit(3)


class EffectPayload(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=110, required=False, default=0)
    idempotent = serializers.BooleanField(required=False, default=False)


class EffectJob(JobDefinition):
    """Writes one row to `test_fault_effect` after `seconds` of work: the side effect fault tests count.

    Every attempt that reaches its body first logs itself in `test_fault_run` (job, attempt, pid), so a
    test can find the process running it and count re-executions. The effect is a plain INSERT unless
    `idempotent`, which skips it when a row for this job exists (as real jobs keyed by job id do).
    The generous retry policy (8 attempts, 1-8 s apart) rides out a ~40 s database outage.
    """

    name = "test_effect"
    queue = QueueName.DATABASE
    payload_serializer = EffectPayload
    retry = RetryPolicy(max_attempts=8, backoff_base=1, backoff_max=8)
    timeout = 120
    blocking = True

    def run(self, payload, context):
        from django.db import connection, transaction

        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO test_fault_run (job_id, attempt, pid) VALUES (%s, %s, %s)",
                [context.job_id, context.attempt, os.getpid()],
            )
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            time.sleep(0.05)
        with transaction.atomic(), connection.cursor() as cursor:
            if payload["idempotent"]:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [context.job_id])
                cursor.execute("SELECT 1 FROM test_fault_effect WHERE job_id = %s", [context.job_id])
                if cursor.fetchone():
                    return {"written": False}
            cursor.execute(
                "INSERT INTO test_fault_effect (job_id, attempt, pid) VALUES (%s, %s, %s)",
                [context.job_id, context.attempt, os.getpid()],
            )
        return {"written": True}


class GuildPayload(serializers.Serializer):
    value = serializers.CharField(max_length=100)
    guildId = serializers.CharField(max_length=64, required=False, allow_blank=True)


class GuildEchoJob(JobDefinition):
    """A job fair-shared per guild (tenant_field), else per owner."""

    name = "test_guild_echo"
    queue = QueueName.DATABASE
    payload_serializer = GuildPayload
    tenant_field = "guildId"

    def run(self, payload, context):
        return {"echo": payload["value"]}


class DatabaseSleepJob(SleepJob):
    """test_sleep on the database queue (per-queue isolation: it holds a database slot only)."""

    name = "test_db_sleep"
    queue = QueueName.DATABASE


class AsyncSleepJob(JobDefinition):
    """An `async def run` job: sleeps on the event loop, writing a line of output every step."""

    name = "test_async_sleep"
    queue = QueueName.CHAT
    payload_serializer = SleepPayload
    retry = RetryPolicy(max_attempts=3, backoff_base=1)
    timeout = 180

    async def run(self, payload, context):
        from queues.output import output_writer_aopen

        _redis().rpush(f"test:started:{payload['tag']}", f"{os.getpid()}:{context.attempt}")
        writer = await output_writer_aopen(job_id=context.job_id, job_type=context.job_type, attempt=context.attempt)
        try:
            deadline = time.monotonic() + payload["seconds"]
            step = 0
            while time.monotonic() < deadline:
                if payload["cooperative"]:
                    await context.acheck_cancelled()
                writer.write(f"{step} ")
                step += 1
                await asyncio.sleep(0.05)
        finally:
            await writer.close()
        await context.run_db(context.set_progress, {"steps": step, "attempt": context.attempt})
        _redis().rpush(f"test:done:{payload['tag']}", context.attempt)
        return {"slept": payload["seconds"]}


class _TimeoutPayload(serializers.Serializer):
    seconds = serializers.FloatField(min_value=0, max_value=60)


class InlineTimeoutJob(JobDefinition):
    """A short-job (inline) type that does not cooperate and overruns its 1 s timeout."""

    name = "test_inline_timeout"
    queue = QueueName.AUDIT
    payload_serializer = _TimeoutPayload
    retry = RetryPolicy(max_attempts=1)
    timeout = 1

    def run(self, payload, context):
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            time.sleep(0.01)
        return {"finished": True}


class ThreadTimeoutJob(InlineTimeoutJob):
    name = "test_thread_timeout"
    queue = QueueName.DATABASE
    blocking = True


class AsyncTimeoutJob(JobDefinition):
    name = "test_async_timeout"
    queue = QueueName.CHAT
    payload_serializer = _TimeoutPayload
    retry = RetryPolicy(max_attempts=1)
    timeout = 1

    async def run(self, payload, context):
        await asyncio.sleep(payload["seconds"])
        return {"finished": True}


class GuildStepPayload(serializers.Serializer):
    guildId = serializers.CharField(max_length=64)
    tag = serializers.CharField(max_length=100)
    seconds = serializers.FloatField(min_value=0, max_value=60, required=False, default=0)
    fail_attempts = serializers.IntegerField(min_value=0, required=False, default=0)


class GuildStepJob(JobDefinition):
    """A chat-queue coroutine of a guild (its tenant, fair-shared): marks its start in Redis
    (`test:order` gets the tag of every start, in order), sleeps, and fails its first `fail_attempts`."""

    name = "test_guild_step"
    queue = QueueName.CHAT
    payload_serializer = GuildStepPayload
    tenant_field = "guildId"
    retry = RetryPolicy(max_attempts=2, backoff_base=1)
    timeout = 60

    async def run(self, payload, context):
        conn = _redis()
        conn.rpush(f"test:started:{payload['tag']}", f"{os.getpid()}:{context.attempt}")
        conn.rpush("test:order", payload["tag"])
        deadline = time.monotonic() + payload["seconds"]
        while time.monotonic() < deadline:
            await context.acheck_cancelled()
            await asyncio.sleep(0.05)
        if context.attempt <= payload["fail_attempts"]:
            raise TransientJobError(f"attempt {context.attempt} failed as planned")
        conn.rpush(f"test:done:{payload['tag']}", context.attempt)
        return {"attempt": context.attempt}
