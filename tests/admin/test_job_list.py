"""The job list shows the jobs people look for: internal types hidden by default, a date drill-down
that offers only the days (months, years) that have jobs."""

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from queues.definitions import JobDefinition, registry
from queues.models import JobRecord
from queues.selectors import periods, queryset_dates_with_rows, queryset_periods_with_rows
from tests.factories.admin import FinishedJobFactory, JobRecordFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:queues_jobrecord_changelist"


def _ids_on_page(response) -> set[str]:
    return set(re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', response.content.decode()))


def _drill_down(response) -> list[str]:
    """The choices offered by the date drill-down (the links above the results, without "‹ back")."""
    block = re.search(r'<nav class="toplinks">(.*?)</nav>', response.content.decode(), re.S)
    if block is None:
        return []
    return [text.strip() for text in re.findall(r'<a href="[^"]*">([^<]+)</a>', block.group(1))]


def _created(job, when):
    JobRecord.objects.filter(pk=job.pk).update(created_at=when)


def test_internal_types_are_declared_on_their_definitions():
    assert {"log_event", "log_events_bulk", "queues_reconcile"} <= set(registry.internal_names())
    assert "create_conversation" not in registry.internal_names()
    assert "test_echo" not in registry.internal_names()
    assert JobDefinition.internal is False


def test_internal_jobs_are_hidden_until_asked_for(superuser, admin_client_for):
    audit_write = FinishedJobFactory(job_type="log_event", queue="audit", request_id="req-internal-1")
    reconcile = FinishedJobFactory(job_type="queues_reconcile")
    echo = FinishedJobFactory(job_type="test_echo")
    client = admin_client_for(superuser)
    url = reverse(CHANGELIST)

    default = client.get(url)
    assert _ids_on_page(default) == {str(echo.pk)}
    page = default.content.decode()
    assert "Show internal jobs" in page and "log_event" in page
    assert _ids_on_page(client.get(url, {"internal": "show"})) == {str(audit_write.pk), str(reconcile.pk), str(echo.pk)}
    assert _ids_on_page(client.get(url, {"internal": "only"})) == {str(audit_write.pk), str(reconcile.pk)}
    # Narrowed to an internal type, or searched by an exact id: the job is found without the filter.
    assert _ids_on_page(client.get(url, {"type": "log_event"})) == {str(audit_write.pk)}
    assert _ids_on_page(client.get(url, {"q": str(reconcile.pk)})) == {str(reconcile.pk)}
    assert _ids_on_page(client.get(url, {"q": "req-internal-1"})) == {str(audit_write.pk)}
    # Other filters still combine with the default; a value the filter does not know is the default.
    assert _ids_on_page(client.get(url, {"queue": "database"})) == {str(echo.pk)}
    unknown = client.get(url, {"internal": "bogus"})
    assert unknown.status_code == 200 and _ids_on_page(unknown) == {str(echo.pk)}
    assert "Show internal jobs" in unknown.content.decode()
    assert "Show internal jobs" not in client.get(url, {"internal": "show"}).content.decode()


def test_drill_down_lists_only_the_days_that_have_jobs(superuser, admin_client_for):
    client = admin_client_for(superuser)
    url = reverse(CHANGELIST)
    base = dt.datetime(2025, 3, 1, 12, tzinfo=dt.UTC)
    for day in (3, 17, 30):
        _created(JobRecordFactory(), base.replace(day=day))
    _created(JobRecordFactory(job_type="log_event", queue="audit"), base.replace(day=9))  # internal: hidden

    month = client.get(url, {"created_at__year": 2025, "created_at__month": 3})
    assert _drill_down(month) == ["March 3", "March 17", "March 30"]
    shown = client.get(url, {"created_at__year": 2025, "created_at__month": 3, "internal": "show"})
    assert _drill_down(shown) == ["March 3", "March 9", "March 17", "March 30"]

    # All jobs in one month: the top level goes straight to that month's days.
    assert _drill_down(client.get(url)) == ["March 3", "March 17", "March 30"]

    _created(JobRecordFactory(), dt.datetime(2025, 7, 4, tzinfo=dt.UTC))
    assert _drill_down(client.get(url)) == ["March 2025", "July 2025"]
    assert _drill_down(client.get(url, {"created_at__year": 2025})) == ["March 2025", "July 2025"]

    _created(JobRecordFactory(), dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
    assert _drill_down(client.get(url)) == ["2021", "2025"]  # not 2022-2024


@pytest.mark.parametrize("strategy", ["distinct", "probes"])
def test_both_strategies_find_the_same_days_months_and_years(strategy, monkeypatch):
    # Few rows take the DISTINCT path; a threshold below zero forces the EXISTS probes.
    if strategy == "probes":
        monkeypatch.setattr(periods, "DISTINCT_DATES_MAX_ROWS", -1)
    for when in (
        dt.datetime(2024, 12, 31, 23, 59, tzinfo=dt.UTC),
        dt.datetime(2025, 3, 3, tzinfo=dt.UTC),
        dt.datetime(2025, 3, 30, 12, tzinfo=dt.UTC),
        dt.datetime(2025, 7, 4, tzinfo=dt.UTC),
    ):
        _created(JobRecordFactory(), when)
    qs = JobRecord.objects.all()
    march = [dt.date(2025, 3, d) for d in range(1, 32)]
    assert queryset_dates_with_rows(
        queryset=qs, field="created_at", kind="day", starts=march, end=dt.date(2025, 4, 1)
    ) == [dt.date(2025, 3, 3), dt.date(2025, 3, 30)]
    months = [dt.date(2025, m, 1) for m in range(1, 13)]
    assert queryset_dates_with_rows(
        queryset=qs, field="created_at", kind="month", starts=months, end=dt.date(2026, 1, 1)
    ) == [dt.date(2025, 3, 1), dt.date(2025, 7, 1)]
    years = [dt.date(y, 1, 1) for y in range(2023, 2026)]
    assert queryset_dates_with_rows(
        queryset=qs, field="created_at", kind="year", starts=years, end=dt.date(2026, 1, 1)
    ) == [dt.date(2024, 1, 1), dt.date(2025, 1, 1)]
    assert (
        queryset_dates_with_rows(
            queryset=qs.filter(queue="chat"), field="created_at", kind="year", starts=years, end=dt.date(2026, 1, 1)
        )
        == []
    )


def test_jobs_from_today_only_offer_today(superuser, admin_client_for):
    JobRecordFactory.create_batch(3)
    today = timezone.localdate()
    response = admin_client_for(superuser).get(reverse(CHANGELIST))
    assert _drill_down(response) == [f"{today:%B} {today.day}"]


def test_drill_down_survives_nonsense_dates(superuser, admin_client_for):
    JobRecordFactory()
    client = admin_client_for(superuser)
    for params in (
        {"created_at__year": "abc"},
        {"created_at__year": 2025, "created_at__month": 13},
        {"created_at__year": 2025, "created_at__day": 5},
    ):  # a day without its month
        assert client.get(reverse(CHANGELIST), params).status_code in (200, 302)


def test_periods_probe_answers_per_period():
    job = JobRecordFactory()
    _created(job, dt.datetime(2024, 2, 10, 8, tzinfo=dt.UTC))
    day = dt.timedelta(days=1)
    starts = [dt.datetime(2024, 2, d, tzinfo=dt.UTC) for d in (9, 10, 11)]
    assert queryset_periods_with_rows(
        queryset=JobRecord.objects.all(), field="created_at", periods=[(s, s + day) for s in starts]
    ) == [False, True, False]
    assert queryset_periods_with_rows(queryset=JobRecord.objects.all(), field="created_at", periods=[]) == []


def test_dashboard_counts_lead_to_the_same_jobs_internal_ones_included(superuser, admin_client_for):
    failed_write = JobRecordFactory(job_type="log_event", queue="audit", status="failed")
    client = admin_client_for(superuser)
    page = client.get(reverse("admin:queues_jobrecord_dashboard")).content.decode()
    link = (
        re.search(
            r'<li class="slimy-failed" title="failed"><a href="([^"]+)">1</a>', page.split('id="slimy-queue-audit"')[1]
        )
        .group(1)
        .replace("&amp;", "&")
    )
    assert _ids_on_page(client.get(link)) == {str(failed_write.pk)}
