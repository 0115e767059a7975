"""Counts recorded in forked work-horses of a real worker process reach /metrics."""

import pytest

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue
from tests.metrics.conftest import manage, parse_metrics, value

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def test_forked_work_horses_counts_reach_metrics(staff_client, process_env, multiproc_dir, redis_conn):
    echo = [job_enqueue(job_type="test_echo", payload={"value": f"v{i}"}) for i in range(3)]
    sleeps = [job_enqueue(job_type="test_sleep", payload={"seconds": 0, "tag": f"s{i}"}) for i in range(2)]

    # The forking worker (the runtime, the default, runs jobs in its own process: no horses to count).
    done = manage(
        "rqworker", "database", "chat", "--burst", "--worker-class", "queues.worker.SlimyWorker", env=process_env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {j.status for j in JobRecord.objects.filter(pk__in=[j.pk for j in echo + sleeps])} == {JobStatus.COMPLETED}

    response = staff_client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = parse_metrics(response.content.decode())
    finished = "slimy_jobs_finished_total"
    assert value(samples, finished, queue="database", job_type="test_echo", outcome="completed") == 3
    assert value(samples, finished, queue="chat", job_type="test_sleep", outcome="completed") == 2
    assert value(samples, "slimy_job_duration_seconds_count", queue="database", job_type="test_echo") == 3
    assert value(samples, "slimy_job_wait_seconds_count", queue="chat", job_type="test_sleep") == 2
    assert value(samples, "slimy_queue_jobs", queue="database", state="queued") == 0
    assert value(samples, "slimy_redis_up") == 1

    # Every job ran in its own forked horse, yet the horses of one worker share one file set.
    horse_pids = {
        int(item.split(b":")[0]) for tag in ("s0", "s1") for item in redis_conn.lrange(f"test:started:{tag}", 0, -1)
    }
    assert len(horse_pids) == 2
    files = sorted(p.name for p in multiproc_dir.glob("*.db"))
    assert not [f for f in files if any(f.endswith(f"_{pid}.db") for pid in horse_pids)], files
    assert [f for f in files if "_horse" in f and f.startswith("counter_")], files
    assert [f for f in files if "_horse" in f and f.startswith("histogram_")], files


def test_metrics_without_multiprocess_dir_report_this_process(staff_client, settings, run_worker):
    from prometheus_client import REGISTRY

    settings.PROMETHEUS_MULTIPROC_DIR = ""
    labels = {"queue": "audit", "job_type": "test_record", "outcome": "completed"}
    before = REGISTRY.get_sample_value("slimy_jobs_finished_total", labels) or 0
    job_enqueue(job_type="test_record", payload={"tag": "a"})
    run_worker(["audit"])
    samples = parse_metrics(staff_client.get("/metrics").content.decode())
    assert value(samples, "slimy_jobs_finished_total", **labels) == before + 1
    # django-prometheus' own metrics and the process collector come along in this mode
    assert any(name == "django_http_requests_before_middlewares_total" for name, _ in samples)
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)
