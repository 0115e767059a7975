import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone
from rq.job import Job

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import IdempotencyKeyReused, UnknownJobType, job_enqueue
from slimy_site.exceptions import ValidationFailed

pytestmark = pytest.mark.django_db(transaction=True)


def test_enqueue_writes_record_and_pushes_on_commit(redis_conn, user):
    job = job_enqueue(job_type="test_echo", payload={"value": "hi"}, owner=user, request_id="req-12345678")
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.QUEUED
    assert record.queue == "database"
    assert record.payload == {"value": "hi", "count": 1}
    assert record.max_attempts == 3
    assert record.request_id == "req-12345678"
    rq_job = Job.fetch(str(job.pk), connection=redis_conn)
    assert rq_job.origin == "database"
    assert rq_job.args == (str(job.pk),)


def test_invalid_payload_is_a_validation_error_naming_fields_and_writes_nothing():
    with pytest.raises(ValidationFailed) as err:
        job_enqueue(job_type="test_echo", payload={"value": "x" * 500})
    assert "value" in err.value.details
    assert JobRecord.objects.count() == 0


def test_unknown_job_type_is_refused():
    with pytest.raises(UnknownJobType):
        job_enqueue(job_type="no_such_type", payload={})


def test_rolled_back_transaction_enqueues_nothing(redis_conn):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with transaction.atomic():
            job = job_enqueue(job_type="test_echo", payload={"value": "never"})
            raise Boom
    assert JobRecord.objects.count() == 0
    assert not Job.exists(str(job.pk), connection=redis_conn)


def test_push_waits_for_the_outer_commit(redis_conn):
    with transaction.atomic():
        job = job_enqueue(job_type="test_echo", payload={"value": "later"})
        assert not Job.exists(str(job.pk), connection=redis_conn)
    assert Job.exists(str(job.pk), connection=redis_conn)


def test_idempotency_key_returns_the_existing_job(user):
    first = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user, idempotency_key="k1")
    again = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user, idempotency_key="k1")
    assert again.pk == first.pk and again.replayed
    assert JobRecord.objects.count() == 1


def test_idempotency_key_with_other_payload_is_refused(user):
    job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user, idempotency_key="k1")
    with pytest.raises(IdempotencyKeyReused):
        job_enqueue(job_type="test_echo", payload={"value": "b"}, owner=user, idempotency_key="k1")


def test_idempotency_keys_are_per_owner(user, other_user):
    a = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user, idempotency_key="k1")
    b = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=other_user, idempotency_key="k1")
    assert a.pk != b.pk


def test_idempotency_key_expires_after_24_hours(user):
    first = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user, idempotency_key="k1")
    JobRecord.objects.filter(pk=first.pk).update(created_at=timezone.now() - dt.timedelta(hours=25))
    second = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user, idempotency_key="k1")
    assert second.pk != first.pk


def test_delay_makes_a_scheduled_job(redis_conn):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, delay=60)
    assert job.status == JobStatus.SCHEDULED
    from queues.connections import get_rq_queue

    assert str(job.pk) in get_rq_queue("database").scheduled_job_registry.get_job_ids()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"delay": -1}, "delay"),
        ({"priority": "urgent"}, "priority"),
        ({"run_at": dt.datetime(2030, 1, 1)}, "run_at"),
        ({"delay": 60 * 60 * 24 * 365}, "run_at"),
        ({"delay": 5, "run_at": timezone.now()}, "delay"),
    ],
)
def test_bad_job_options_are_validation_errors(kwargs, field):
    with pytest.raises(ValidationFailed) as err:
        job_enqueue(job_type="test_echo", payload={"value": "x"}, **kwargs)
    assert field in err.value.details
    assert JobRecord.objects.count() == 0


def test_priority_selects_the_rq_list(redis_conn):
    from queues.connections import get_rq_queue

    high = job_enqueue(job_type="test_record", payload={"tag": "h"}, priority="high")
    low = job_enqueue(job_type="test_record", payload={"tag": "l"}, priority="low")
    assert get_rq_queue("audit", "high").job_ids == [str(high.pk)]
    assert get_rq_queue("audit", "low").job_ids == [str(low.pk)]
