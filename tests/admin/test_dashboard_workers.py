"""The dashboard's workers (the runtime's slots per process, or RQ's workers) and its last-hour chart."""

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from queues.admin.dashboard import PLOT_BOTTOM, PLOT_TOP, _chart, _nice_ceiling
from queues.constants import JobStatus, QueueName
from queues.keys import SLOTS_KEY
from queues.worker import SlimySimpleWorker
from tests.factories.admin import FinishedJobFactory

pytestmark = pytest.mark.django_db

DASHBOARD = "admin:queues_jobrecord_dashboard"


def _slots(redis_conn, name, ttl=30, **fields):
    redis_conn.hset(SLOTS_KEY.format(name), mapping={k.replace("__", ":"): v for k, v in fields.items()})
    redis_conn.expire(SLOTS_KEY.format(name), ttl)


def test_workers_are_grouped_by_host_with_slots_in_use_per_queue(superuser, admin_client_for, redis_conn):
    _slots(
        redis_conn,
        "web-1.slimy.12",
        host="web-1",
        pid=12,
        chat__busy=3,
        chat__slots=8,
        database__busy=1,
        database__slots=4,
        audit__busy=0,
        audit__slots=2,
    )
    _slots(redis_conn, "web-1.slimy.13", host="web-1", pid=13, database__busy=4, database__slots=4)
    _slots(redis_conn, "web-2.slimy.7", host="web-2", pid=7, chat__busy=0, chat__slots=8)
    rq_worker = SlimySimpleWorker([QueueName.CHAT], connection=redis_conn, name="rq-only-worker")
    rq_worker.register_birth()
    try:
        response = admin_client_for(superuser).get(reverse(DASHBOARD))
    finally:
        rq_worker.register_death()
    assert response.context["workers_report_slots"] is True
    hosts = response.context["worker_hosts"]
    assert [h["host"] for h in hosts] == ["web-1", "web-2"]
    first = hosts[0]["processes"][0]
    assert (first["name"], first["pid"], first["busy"], first["slots"]) == ("web-1.slimy.12", 12, 4, 14)
    assert [(q["queue"], q["busy"], q["slots"]) for q in first["queues"]] == [
        ("chat", 3, 8),
        ("database", 1, 4),
        ("audit", 0, 2),
    ]
    page = response.content.decode()
    assert "Workers (3 processes)" in page
    assert re.search(r'data-queue="chat">.*?chat 3/8</span>', page)
    assert '<b style="width:100%">' in page  # web-1.slimy.13: every database slot busy
    assert "rq-only-worker" not in page  # the runtime's report replaces RQ's view of the workers


def test_without_the_runtimes_report_the_dashboard_shows_rqs_workers(superuser, admin_client_for, redis_conn):
    worker = SlimySimpleWorker([QueueName.DATABASE], connection=redis_conn, name="rq-fallback-worker")
    worker.register_birth()
    try:
        response = admin_client_for(superuser).get(reverse(DASHBOARD))
    finally:
        worker.register_death()
    assert response.context["workers_report_slots"] is False
    process = response.context["worker_hosts"][0]["processes"][0]
    assert process["name"] == "rq-fallback-worker" and process["queues"] == ["database"]
    page = response.content.decode()
    assert "rq-fallback-worker" in page and "Slots in use" not in page and "<th>Current job</th>" in page


def test_malformed_slot_fields_are_skipped_not_fatal(superuser, admin_client_for, redis_conn):
    _slots(
        redis_conn,
        "odd",
        host="h",
        pid="not-a-pid",
        chat__busy="many",
        chat__slots=4,
        database__busy=-1,
        database__slots=2,
        nonsense="x",
    )
    response = admin_client_for(superuser).get(reverse(DASHBOARD))
    assert response.status_code == 200
    process = response.context["worker_hosts"][0]["processes"][0]
    assert process["pid"] is None
    assert [(q["queue"], q["busy"], q["slots"]) for q in process["queues"]] == [("chat", 0, 4), ("database", 0, 2)]


def test_chart_has_round_y_axis_and_quarter_hour_x_axis():
    now = dt.datetime(2026, 11, 28, 9, 30, 20, tzinfo=dt.UTC)
    minute = now.replace(second=0) - dt.timedelta(minutes=5)
    chart = _chart({minute: {"completed": 31, "failed": 6}}, now=now)
    assert chart.peak == 37 and chart.y_max == 50
    assert [label for _, label in chart.y_ticks] == [0, 25, 50]
    assert chart.y_ticks[0][0] == PLOT_BOTTOM and chart.y_ticks[-1][0] == PLOT_TOP
    assert [label for _, label in chart.x_ticks] == ["08:31", "08:46", "09:01", "09:16", "09:31"]
    bar = next(b for b in chart.bars if b.minute == "09:25")
    assert (bar.completed, bar.failed) == (31, 6)
    # Heights are to scale: 37 of 50 jobs/min fill 74 % of the plot.
    assert bar.completed_h + bar.failed_h == pytest.approx((PLOT_BOTTOM - PLOT_TOP) * 37 / 50, abs=0.02)
    assert [_nice_ceiling(v) for v in (0, 1, 2, 3, 7, 10, 11, 120)] == [1, 1, 2, 5, 10, 10, 20, 200]


def test_dashboard_chart_is_inline_svg_with_axes_and_no_external_resources(superuser, admin_client_for):
    FinishedJobFactory(queue=QueueName.DATABASE, status=JobStatus.COMPLETED, finished_at=timezone.now())
    page = admin_client_for(superuser).get(reverse(DASHBOARD)).content.decode()
    section = re.search(r'<section class="slimy-card" id="slimy-queue-database".*?</section>', page, re.S).group(0)
    assert section.count('class="axis"') >= 2 and 'class="y-tick"' in section and 'class="x-tick"' in section
    assert "1 completed</title>" in section
    assert not re.search(r'(src|href)="(https?:)?//', page)  # no CDN: everything from this server
