"""/metrics shows per-tenant in-flight and waiting jobs, with bounded label cardinality."""

import pytest

from queues.fairness import fair_pop, fair_push
from tests.metrics.conftest import parse_metrics, value

pytestmark = pytest.mark.django_db


def test_top_tenants_by_name_and_the_rest_as_other(staff_client, redis_conn, settings):
    settings.METRICS_TENANT_TOP_N = 2
    for i in range(6):
        fair_push(conn=redis_conn, queue="chat", priority="normal", tenant="guild-big", job_id=f"b{i}")
    for i in range(3):
        fair_push(conn=redis_conn, queue="chat", priority="high", tenant="guild-mid", job_id=f"m{i}")
    for n in range(5):
        fair_push(conn=redis_conn, queue="chat", priority="low", tenant=f"small-{n}", job_id=f"s{n}")
    popped = fair_pop(conn=redis_conn, queue="chat", worker="w", priorities=["normal"])
    assert popped.tenant == "guild-big"

    samples = parse_metrics(staff_client.get("/metrics").content.decode())
    assert value(samples, "slimy_tenant_waiting_jobs", queue="chat", tenant="guild-big") == 5
    assert value(samples, "slimy_tenant_inflight_jobs", queue="chat", tenant="guild-big") == 1
    assert value(samples, "slimy_tenant_waiting_jobs", queue="chat", tenant="guild-mid") == 3
    assert value(samples, "slimy_tenant_waiting_jobs", queue="chat", tenant="other") == 5
    tenants = {dict(labels)["tenant"] for name, labels in samples if name == "slimy_tenant_waiting_jobs"}
    assert tenants == {"guild-big", "guild-mid", "other"}
