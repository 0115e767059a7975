import io

import pytest
from django.core.management import CommandError, call_command

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = []


def count_call():
    CALLS.append(1)


def failing_hook():
    raise RuntimeError("a hook's bug")


def test_hooks_command_runs_every_hook_once_and_reports_failures(settings):
    CALLS.clear()
    settings.PERIODIC_HOOKS = [
        "tests.queues.test_reconcile_command.failing_hook",
        "tests.queues.test_reconcile_command.count_call",
    ]
    err = io.StringIO()
    call_command("queues_hooks", stderr=err)
    assert CALLS == [1]  # the failing hook did not stop the next one
    assert "1 periodic hook(s) failed" in err.getvalue()


def test_one_pass_reports_what_it_did(redis_conn):
    job_enqueue(job_type="test_echo", payload={"value": "x"})
    redis_conn.flushdb()
    out = io.StringIO()
    call_command("queues_reconcile", grace=0, stdout=out)
    assert "requeued 1 lost job(s)" in out.getvalue()


def test_loop_runs_the_periodic_hooks(settings):
    CALLS.clear()
    settings.PERIODIC_HOOKS = ["tests.queues.test_reconcile_command.count_call"]
    settings.PERIODIC_HOOKS_INTERVAL = 0
    call_command("queues_reconcile", loop=True, interval=1, passes=2, stdout=io.StringIO())
    assert len(CALLS) == 2


def test_default_hooks_schedule_the_daily_audit_cleanup_and_verify_the_chain():
    from prometheus_client import REGISTRY

    call_command("queues_reconcile", loop=True, interval=1, passes=1, stdout=io.StringIO())
    waiting = JobRecord.objects.filter(job_type="audit_cleanup", status=JobStatus.SCHEDULED)
    assert waiting.count() == 1
    call_command("queues_reconcile", loop=True, interval=1, passes=1, stdout=io.StringIO())
    assert waiting.count() == 1  # idempotent
    assert REGISTRY.get_sample_value("slimy_audit_chain_ok") == 1.0


@pytest.mark.parametrize("options", [{"interval": 0, "loop": True}, {"grace": -1}])
def test_bad_options_are_command_errors(options):
    with pytest.raises(CommandError):
        call_command("queues_reconcile", **options)


def test_default_hooks_expire_old_finished_job_records(settings, run_worker):
    import datetime as dt

    from django.utils import timezone

    settings.JOB_RECORD_RETENTION_DAYS = 7
    old = job_enqueue(job_type="test_echo", payload={"value": "old"})
    fresh = job_enqueue(job_type="test_echo", payload={"value": "fresh"})
    waiting_old = job_enqueue(job_type="test_echo", payload={"value": "waiting"}, delay=600)
    run_worker(["database"])
    long_ago = timezone.now() - dt.timedelta(days=8)
    JobRecord.objects.filter(pk__in=[old.pk, waiting_old.pk]).update(created_at=long_ago, finished_at=None)
    JobRecord.objects.filter(pk=old.pk).update(finished_at=long_ago)
    call_command("queues_reconcile", loop=True, interval=1, passes=1, stdout=io.StringIO())
    assert set(JobRecord.objects.values_list("pk", flat=True)) >= {fresh.pk, waiting_old.pk}
    assert not JobRecord.objects.filter(pk=old.pk).exists()
