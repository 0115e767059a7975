"""The lean submission path writes exactly what the ORM and RQ wrote before: the ledger row (one INSERT
built from the model's fields) and the RQ job (one script writing the hash RQ builds)."""

import pytest
from django.db import transaction
from django.forms.models import model_to_dict
from rq.job import Job

from queues.connections import get_rq_queue
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.runner import execute
from queues.services import RUNNER, job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)

TIMESTAMPS = {b"created_at", b"enqueued_at"}


def _columns(record: JobRecord) -> dict:
    data = model_to_dict(record, fields=[f.name for f in JobRecord._meta.concrete_fields])
    data.update(created_at=record.created_at, updated_at=record.updated_at)
    return data


def test_the_lean_insert_stores_every_column_as_the_orm_reads_it(user):
    job = job_enqueue(
        job_type="test_echo", payload={"value": "hi"}, owner=user, request_id="req-12345678", idempotency_key="k-1"
    )
    stored = JobRecord.objects.get(pk=job.pk)
    assert _columns(stored) == _columns(job)
    assert stored.status == JobStatus.QUEUED
    assert stored.payload == {"value": "hi", "count": 1}
    assert stored.owner_id == user.pk
    assert stored.idempotency_key == "k-1" and stored.idempotency_fingerprint
    assert stored.created_at == stored.updated_at is not None
    assert stored.trace_context == {} and stored.progress is None and stored.result is None


def test_the_lean_insert_keeps_its_savepoint_inside_a_caller_transaction(user):
    with transaction.atomic():
        first = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user, idempotency_key="same")
        again = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user, idempotency_key="same")
    assert again.pk == first.pk and again.replayed
    assert JobRecord.objects.count() == 1


def test_the_pushed_rq_job_is_the_one_rq_enqueue_writes(redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "hi"})
    lean = redis_conn.hgetall(f"rq:job:{job.pk}")
    # The same job enqueued by RQ itself, under another id, for comparison.
    queue = get_rq_queue(job.queue, job.priority)
    other = "11111111-1111-1111-1111-111111111111"
    queue.enqueue(
        RUNNER,
        other,
        job_id=other,
        job_timeout=lean[b"timeout"].decode(),
        result_ttl=int(lean[b"result_ttl"]),
        failure_ttl=int(lean[b"failure_ttl"]),
        description="test_echo",
        meta={"job_type": "test_echo"},
    )
    by_rq = redis_conn.hgetall(f"rq:job:{other}")
    assert set(lean) == set(by_rq)
    differing = {name for name in lean if lean[name] != by_rq[name]}
    assert differing <= TIMESTAMPS | {b"data"}
    rq_job = Job.fetch(str(job.pk), connection=redis_conn)
    assert rq_job.func_name == RUNNER and rq_job.func is execute
    assert rq_job.args == (str(job.pk),) and rq_job.kwargs == {}
    assert rq_job.origin == job.queue and rq_job.get_status() == "queued"
    assert rq_job.meta == {"job_type": "test_echo"} and rq_job.timeout == int(lean[b"timeout"])
    assert str(job.pk).encode() in redis_conn.lrange(queue.key, 0, -1)
    assert queue.key.encode() in redis_conn.smembers("rq:queues")


def test_the_push_forgets_a_failed_copy_of_the_job(redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "hi"})
    queue = get_rq_queue(job.queue, job.priority)
    redis_conn.zadd(queue.failed_job_registry.key, {str(job.pk): 1})
    from queues.services import job_push

    job_push(job=job)
    assert redis_conn.zscore(queue.failed_job_registry.key, str(job.pk)) is None


def test_a_pushed_job_runs(run_worker, redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "ran"})
    run_worker(["database"])
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.COMPLETED
