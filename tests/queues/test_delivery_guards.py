"""Guards against duplicate and early deliveries, and against untrustworthy retry hints."""

import datetime as dt

import pytest
from django.utils import timezone

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.reconcile import queues_reconcile
from queues.services import job_attempt_failed, job_enqueue, job_retry, job_start
from queues.services.batch import job_start_batch

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_same_id_twice_in_one_batch_starts_once():
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    started = job_start_batch(job_ids=[str(job.pk), str(job.pk)], worker_name="w")
    assert [str(j.pk) for j in started] == [str(job.pk)]
    record = JobRecord.objects.get(pk=job.pk)
    assert record.attempts == 1 and record.attempt_history.count() == 1


def test_an_early_delivery_of_a_delayed_job_is_skipped():
    job = job_enqueue(job_type="test_echo", payload={"value": "later"}, delay=60)
    assert job_start(job_id=job.pk, worker_name="w") is None
    assert job_start_batch(job_ids=[str(job.pk)], worker_name="w") == []
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.SCHEDULED and record.attempts == 0
    JobRecord.objects.filter(pk=job.pk).update(scheduled_for=timezone.now())
    assert job_start(job_id=job.pk, worker_name="w") is not None


@pytest.mark.parametrize("hint, expected", [(float("inf"), 2.0), (float("nan"), 2.0), (1e12, 3600.0), (30.0, 30.0)])
def test_retry_after_hints_are_bounded(hint, expected):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"})
    job = job_start(job_id=job.pk, worker_name="w")
    delay = job_attempt_failed(job=job, exc=RuntimeError("429"), permanent=False, retry_after=hint)
    assert delay == expected
    assert JobRecord.objects.get(pk=job.pk).status == JobStatus.RETRYING


def test_a_retried_old_job_gets_a_fresh_grace_period(run_worker, redis_conn):
    job = job_enqueue(job_type="test_permanent", payload={"tag": "old"})
    run_worker(["database"])
    JobRecord.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - dt.timedelta(hours=1), updated_at=timezone.now() - dt.timedelta(hours=1)
    )
    job_retry(job=JobRecord.objects.get(pk=job.pk))
    redis_conn.flushdb()  # as if its push were still in flight
    assert queues_reconcile(grace_seconds=30).requeued == []
