"""Snapshot figures that need no worker: HTTP, quantiles, hook counting rules, Redis down."""

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

from queues.metrics.snapshot import _quantile
from queues.services import job_cancel, job_enqueue
from tests.metrics.conftest import parse_metrics, total, value
from tests.redis_server import free_port


@pytest.fixture
def single_process(settings):
    settings.PROMETHEUS_MULTIPROC_DIR = ""


@pytest.mark.django_db
def test_http_figures_agree_with_metrics(staff_client, client, single_process):
    before = staff_client.get("/api/metrics").json()["http"]
    for _ in range(3):
        assert client.get("/health/live").status_code == 200
    for _ in range(2):
        assert client.get("/no-such-page").status_code == 404
    samples = parse_metrics(staff_client.get("/metrics").content.decode())
    after = staff_client.get("/api/metrics").json()["http"]

    by_status = {}
    for (name, labels), n in samples.items():
        if name == "django_http_responses_total_by_status_total":
            klass = dict(labels)["status"][0] + "xx"
            by_status[klass] = by_status.get(klass, 0) + int(n)
    # /metrics was rendered after the first snapshot's and the health responses, before its own.
    assert by_status["2xx"] == before["byStatusClass"].get("2xx", 0) + 1 + 3
    assert by_status.get("4xx", 0) == before["byStatusClass"].get("4xx", 0) + 2
    assert after["byStatusClass"]["2xx"] == by_status["2xx"] + 1
    assert after["byStatusClass"]["4xx"] == by_status["4xx"]
    assert after["responses"] == sum(after["byStatusClass"].values())
    assert after["clientErrorRate"] == round(after["byStatusClass"]["4xx"] / after["responses"] * 100, 2)
    assert after["errorRate"] == round(after["byStatusClass"].get("5xx", 0) / after["responses"] * 100, 2)
    requests = total(samples, "django_http_requests_before_middlewares_total")
    assert after["requests"] == requests + 1  # the snapshot request itself was counted on the way in
    latency = after["responseTime"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
    assert after["requestRate"] > 0


def test_quantiles_interpolate_like_promql():
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert _quantile(0.5, buckets) == pytest.approx(0.1)
    assert _quantile(0.95, buckets) == pytest.approx(0.75)
    assert _quantile(0.99, buckets) == pytest.approx(0.95)
    assert _quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1  # beyond the last bound
    assert _quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def _enqueued(job_type="test_echo"):
    return REGISTRY.get_sample_value("slimy_jobs_enqueued_total", {"queue": "database", "job_type": job_type}) or 0


@pytest.mark.django_db(transaction=True)
def test_enqueue_is_counted_when_committed_and_replays_are_not(user):
    before = _enqueued()
    with transaction.atomic():
        job_enqueue(job_type="test_echo", payload={"value": "x"})
        transaction.set_rollback(True)
    assert _enqueued() == before
    job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user, idempotency_key="k-1")
    assert _enqueued() == before + 1
    replay = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=user, idempotency_key="k-1")
    assert replay.replayed and _enqueued() == before + 1


@pytest.mark.django_db(transaction=True)
def test_cancel_counts_a_cancelled_outcome_without_a_duration(staff_client, single_process):
    labels = {"queue": "chat", "job_type": "test_sleep"}
    durations = REGISTRY.get_sample_value("slimy_job_duration_seconds_count", labels) or 0
    job = job_enqueue(job_type="test_sleep", payload={"seconds": 1})
    samples = parse_metrics(staff_client.get("/metrics").content.decode())
    assert value(samples, "slimy_queue_jobs", queue="chat", state="queued") == 1
    cancelled = value(samples, "slimy_jobs_finished_total", outcome="cancelled", **labels) or 0
    job_cancel(job=job)
    samples = parse_metrics(staff_client.get("/metrics").content.decode())
    assert value(samples, "slimy_jobs_finished_total", outcome="cancelled", **labels) == cancelled + 1
    assert (REGISTRY.get_sample_value("slimy_job_duration_seconds_count", labels) or 0) == durations
    assert value(samples, "slimy_queue_jobs", queue="chat", state="queued") == 0


@pytest.mark.django_db(transaction=True)
def test_oldest_job_age_and_scheduled_depth(staff_client, single_process, redis_conn):
    import time

    job_enqueue(job_type="test_echo", payload={"value": "old"}, priority="low")
    job_enqueue(job_type="test_echo", payload={"value": "later"}, delay=60)
    time.sleep(1.1)
    samples = parse_metrics(staff_client.get("/metrics").content.decode())
    assert value(samples, "slimy_queue_jobs", queue="database", state="queued") == 1
    assert value(samples, "slimy_queue_jobs", queue="database", state="scheduled") == 1
    assert value(samples, "slimy_queue_oldest_job_age_seconds", queue="database") >= 1.0
    assert value(samples, "slimy_queue_oldest_job_age_seconds", queue="chat") == 0
    snapshot = staff_client.get("/api/metrics").json()["jobs"]
    assert snapshot["queues"]["database"]["queued"] == 1 and snapshot["totals"]["queued"] == 1
    assert snapshot["queues"]["database"]["scheduled"] == 1


@pytest.mark.django_db
def test_redis_down_still_answers(staff_client, settings, single_process):
    from queues.connections import reset_connections

    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    reset_connections()
    try:
        response = staff_client.get("/metrics")
        assert response.status_code == 200
        samples = parse_metrics(response.content.decode())
        assert value(samples, "slimy_redis_up") == 0
        assert not [name for name, _ in samples if name == "slimy_queue_jobs"]
        snapshot = staff_client.get("/api/metrics").json()
        assert snapshot["redis"] is False and snapshot["jobs"]["queues"]["chat"]["queued"] is None
    finally:
        reset_connections()


def test_system_check_rejects_a_missing_multiprocess_dir(settings, tmp_path):
    from queues.metrics import check_multiprocess_dir

    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path / "missing")
    assert [e.id for e in check_multiprocess_dir()] == ["queues.E101"]
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    assert check_multiprocess_dir() == []


def test_prepare_multiprocess_dir_empties_it(tmp_path):
    from queues.metrics import metrics_started_at, prepare_multiprocess_dir

    (tmp_path / "prom").mkdir()
    (tmp_path / "prom" / "counter_123.db").write_bytes(b"old")
    path = prepare_multiprocess_dir(tmp_path / "prom")
    assert [p.name for p in path.iterdir()] == ["started_at"]
    assert metrics_started_at(path) > 0


def test_a_worker_runtime_counts_finished_jobs_in_memory_and_writes_them_when_it_beats(redis_conn):
    from queues import signals
    from queues.metrics import throughput_defer, throughput_per_minute
    from queues.models import JobRecord

    job = JobRecord(queue="database", job_type="test_echo")
    signals.worker_started.send(sender=None)
    try:
        for outcome in ("completed", "completed", "failed", "retried"):
            signals.job_finished.send(sender=JobRecord, job=job, outcome=outcome, duration=0.01)
        assert throughput_per_minute(redis_conn) == {}  # one round trip per beat, not one per job
        signals.worker_heartbeat.send(sender=None)
        assert throughput_per_minute(redis_conn) == {"database": 3 / 5}
        signals.job_finished.send(sender=JobRecord, job=job, outcome="completed", duration=0.01)
    finally:
        signals.worker_stopped.send(sender=None)  # the last count is written, and later ones at once
        throughput_defer(False)
    assert throughput_per_minute(redis_conn) == {"database": 4 / 5}
    signals.job_finished.send(sender=JobRecord, job=job, outcome="completed", duration=0.01)
    assert throughput_per_minute(redis_conn) == {"database": 5 / 5}
