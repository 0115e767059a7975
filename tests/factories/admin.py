"""Factories for the admin tests: job records in any state, written straight to the ledger."""

import datetime as dt

import factory
from django.utils import timezone

from queues.constants import JobStatus, QueueName
from queues.models import JobAttempt, JobRecord


class JobRecordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobRecord

    job_type = "test_echo"
    queue = QueueName.DATABASE
    payload = factory.LazyFunction(lambda: {"value": "x"})
    status = JobStatus.QUEUED


class FinishedJobFactory(JobRecordFactory):
    status = JobStatus.COMPLETED
    attempts = 1
    started_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(seconds=2))
    finished_at = factory.LazyFunction(timezone.now)
    result = factory.LazyFunction(lambda: {"echo": "x"})


class JobAttemptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobAttempt

    job = factory.SubFactory(JobRecordFactory)
    number = 1
    worker_name = "worker-1"
    started_at = factory.LazyFunction(lambda: timezone.now() - dt.timedelta(seconds=2))
    finished_at = factory.LazyFunction(timezone.now)
    outcome = JobAttempt.Outcome.COMPLETED
