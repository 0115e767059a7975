"""A known workload in real worker processes: exact figures in /metrics and in the snapshot."""

import pytest

from queues.constants import FINAL_STATUSES
from queues.models import JobRecord
from tests.metrics.conftest import django_script, parse_metrics, stop_worker, total, value, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

# Enqueued in a separate Django process, as the web process would, so its counts land in the
# shared directory too; the audit counters are what the audit trail increments.
WORKLOAD = """
from queues.services import job_enqueue
from audit.metrics import AUDIT_EVENTS_FAILED, AUDIT_EVENTS_WRITTEN
for i in range(2):
    job_enqueue(job_type="test_echo", payload={"value": f"e{i}"})
job_enqueue(job_type="test_permanent", payload={"tag": "p"})
job_enqueue(job_type="test_flaky", payload={"succeed_on": 2, "tag": "f"}, priority="high")
for i in range(3):
    job_enqueue(job_type="test_record", payload={"tag": f"r{i}"}, priority="low")
for i in range(2):
    job_enqueue(job_type="test_sleep", payload={"seconds": 0.2, "tag": f"s{i}"})
job_enqueue(job_type="test_crash", payload={"tag": "c"})
AUDIT_EVENTS_WRITTEN.inc(3)
AUDIT_EVENTS_FAILED.labels("enqueue").inc()
print("enqueued")
"""

FINISHED = {
    ("database", "test_echo", "completed"): 2,
    ("database", "test_permanent", "failed"): 1,
    ("database", "test_flaky", "retried"): 1,
    ("database", "test_flaky", "completed"): 1,
    ("audit", "test_record", "completed"): 3,
    ("chat", "test_sleep", "completed"): 2,
    ("chat", "test_crash", "retried"): 1,  # the work-horse died: recorded by its parent worker
    ("chat", "test_crash", "failed"): 1,
}


def test_known_workload_figures_in_metrics_and_snapshot(staff_client, process_env, start_worker):
    # The forking worker: test_crash kills its work-horse (a dead horse's attempt is counted as such);
    # under the runtime (the default) it would kill the whole worker.
    process_env = {**process_env, "RQ_WORKER_CLASS": "queues.worker.SlimyWorker"}
    assert "enqueued" in django_script(WORKLOAD, env=process_env)
    assert JobRecord.objects.count() == 10
    database = start_worker("database", env=process_env)
    start_worker("chat", "audit", env=process_env)
    wait_for(
        lambda: JobRecord.objects.exclude(status__in=FINAL_STATUSES).count() == 0, timeout=90, message="every job final"
    )
    wait_for(
        lambda: value(parse_metrics(staff_client.get("/metrics").content.decode()), "slimy_workers", state="idle") == 2,
        message="both workers idle",
    )

    samples = parse_metrics(staff_client.get("/metrics").content.decode())
    snapshot = staff_client.get("/api/metrics").json()

    # --- /metrics
    for (queue, job_type, outcome), n in FINISHED.items():
        assert value(samples, "slimy_jobs_finished_total", queue=queue, job_type=job_type, outcome=outcome) == n
    assert total(samples, "slimy_jobs_finished_total") == sum(FINISHED.values())
    enqueued = {
        ("database", "test_echo"): 2,
        ("database", "test_permanent"): 1,
        ("database", "test_flaky"): 1,
        ("audit", "test_record"): 3,
        ("chat", "test_sleep"): 2,
        ("chat", "test_crash"): 1,
    }
    for (queue, job_type), n in enqueued.items():
        assert value(samples, "slimy_jobs_enqueued_total", queue=queue, job_type=job_type) == n
    # one duration per attempt the runner saw end; a dead horse's attempt has none
    runs = {
        ("database", "test_echo"): 2,
        ("database", "test_permanent"): 1,
        ("database", "test_flaky"): 2,
        ("audit", "test_record"): 3,
        ("chat", "test_sleep"): 2,
    }
    for (queue, job_type), n in runs.items():
        assert value(samples, "slimy_job_duration_seconds_count", queue=queue, job_type=job_type) == n
    assert value(samples, "slimy_job_duration_seconds_count", queue="chat", job_type="test_crash") is None
    assert value(samples, "slimy_job_wait_seconds_count", queue="chat", job_type="test_crash") == 2
    assert value(samples, "slimy_job_wait_seconds_count", queue="database", job_type="test_flaky") == 2
    for queue in ("chat", "database", "audit"):
        assert value(samples, "slimy_queue_jobs", queue=queue, state="queued") == 0
        assert value(samples, "slimy_queue_jobs", queue=queue, state="scheduled") == 0
        assert value(samples, "slimy_queue_jobs", queue=queue, state="started") == 0
        assert value(samples, "slimy_queue_workers", queue=queue) == 1
        assert value(samples, "slimy_queue_oldest_job_age_seconds", queue=queue) == 0
    assert value(samples, "slimy_queue_jobs", queue="database", state="failed") == 1
    assert value(samples, "slimy_queue_jobs", queue="chat", state="failed") == 1
    assert value(samples, "slimy_queue_jobs", queue="audit", state="failed") == 0
    assert value(samples, "slimy_workers", state="busy") == 0
    assert value(samples, "slimy_audit_events_written_total") == 3
    assert value(samples, "slimy_audit_events_failed_total", stage="enqueue") == 1

    # --- the snapshot says the same
    jobs = snapshot["jobs"]
    expected = {
        # queue: (completed, failed, retried, successRate, throughput = final jobs / 5 minutes)
        "database": (3, 1, 1, 75.0, 0.8),
        "audit": (3, 0, 0, 100.0, 0.6),
        "chat": (2, 1, 1, 66.67, 0.6),
    }
    for queue, (completed, failed, retried, rate, throughput) in expected.items():
        figures = jobs["queues"][queue]
        assert (figures["completed"], figures["failed"], figures["retried"]) == (completed, failed, retried)
        assert figures["successRate"] == rate
        assert figures["throughput"] == throughput
        assert (figures["queued"], figures["active"], figures["workers"]) == (0, 0, 1)
        count = total(samples, "slimy_job_duration_seconds_count", queue=queue)
        seconds = total(samples, "slimy_job_duration_seconds_sum", queue=queue)
        assert figures["averageDuration"] == round(seconds / count * 1000, 3)
        assert figures["enqueued"] == total(samples, "slimy_jobs_enqueued_total", queue=queue)
    assert jobs["queues"]["chat"]["averageDuration"] >= 200  # test_sleep sleeps 0.2 s
    assert {k: jobs["totals"][k] for k in ("queued", "active", "completed", "failed")} == {
        "queued": 0,
        "active": 0,
        "completed": 8,
        "failed": 2,
    }
    assert snapshot["audit"] == {
        "logged": 3,
        "failed": 1,
        "successRate": 75.0,
        "failedByStage": {"enqueue": 1},
        "chainOk": None,
    }
    assert snapshot["workers"]["byState"]["idle"] == 2
    assert snapshot["multiprocess"] is True
    assert snapshot["process"]["memory"]["rss"] > 0 and snapshot["process"]["uptimeSeconds"] > 0
    assert snapshot["system"]["memory"]["total"] > 0

    # After the workers stop (warm shutdown), nobody consumes the queues any more.
    stop_worker(database)
    samples = parse_metrics(staff_client.get("/metrics").content.decode())
    assert value(samples, "slimy_queue_workers", queue="database") == 0
    assert value(samples, "slimy_queue_workers", queue="chat") == 1
