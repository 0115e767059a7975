"""django-rq's pages at /admin/rq/: `queues.manage_queues` only, and nothing there changes Redis."""

import pytest
from django.urls import reverse
from django_rq.settings import get_queues_map

from queues.connections import get_rq_queue
from queues.models import JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


def _queued_job():
    job = job_enqueue(job_type="test_echo", payload={"value": "keep me"})
    rq_queue = get_rq_queue(job.queue)
    assert str(job.pk) in rq_queue.job_ids
    return job, rq_queue, get_queues_map()[rq_queue.name]


def test_staff_without_manage_queues_gets_403_and_cannot_empty_a_queue(make_staff, admin_client_for):
    job, rq_queue, index = _queued_job()
    client = admin_client_for(make_staff("view", "retry", "cancel"))
    for url in (
        reverse("django_rq:home"),
        reverse("django_rq:jobs", args=[index]),
        reverse("django_rq:job_detail", args=[index, str(job.pk)]),
        reverse("django_rq:home_json"),
    ):
        assert client.get(url).status_code == 403, url
    assert client.post(reverse("django_rq:clear", args=[index])).status_code == 403
    assert client.post(reverse("django_rq:delete_job", args=[index, str(job.pk)])).status_code == 403
    assert str(job.pk) in rq_queue.job_ids


def test_anonymous_users_are_sent_to_the_login_page(client):
    response = client.get(reverse("django_rq:home"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_manage_queues_sees_the_pages(make_staff, admin_client_for):
    job, _, index = _queued_job()
    client = admin_client_for(make_staff("manage"))
    assert client.get(reverse("django_rq:home")).status_code == 200
    page = client.get(reverse("django_rq:jobs", args=[index]))
    assert page.status_code == 200 and str(job.pk) in page.content.decode()
    assert client.get(reverse("django_rq:job_detail", args=[index, str(job.pk)])).status_code == 200


@pytest.mark.parametrize(
    "name, with_job",
    [
        ("clear", False),
        ("requeue_all", False),
        ("delete_failed_jobs", False),
        ("actions", False),
        ("confirm_action", False),
        ("delete_job", True),
        ("requeue_job", True),
        ("enqueue_job", True),
        ("stop_job", True),
    ],
)
def test_destructive_views_change_nothing_and_point_to_the_audited_admin(
    name, with_job, make_staff, admin_client_for, redis_conn
):
    job, rq_queue, index = _queued_job()
    client = admin_client_for(make_staff("manage", "view", "retry", "cancel", "delete"))
    before = sorted(redis_conn.keys("rq:*"))
    args = [index, str(job.pk)] if with_job else [index]
    response = client.post(
        reverse(f"django_rq:{name}", args=args),
        {"action": "delete", "job_ids": [str(job.pk)], "_selected_action": [str(job.pk)]},
    )
    assert response.status_code == 302
    expected = (
        reverse("admin:queues_jobrecord_change", args=[job.pk])
        if with_job
        else reverse("admin:queues_jobrecord_dashboard")
    )
    assert response["Location"] == expected
    assert str(job.pk) in rq_queue.job_ids
    assert sorted(redis_conn.keys("rq:*")) == before
    assert JobRecord.objects.get(pk=job.pk).status == "queued"


def test_django_rq_admin_registration_is_not_served(superuser, admin_client_for):
    # django-rq would otherwise register its views again under the admin, behind is_staff alone.
    assert admin_client_for(superuser).get("/admin/django_rq/dashboard/").status_code == 404


def test_links_to_django_rq_are_shown_only_with_manage_queues(make_staff, admin_client_for):
    rq_home = reverse("django_rq:home")
    viewer = admin_client_for(make_staff("view"))
    assert rq_home not in viewer.get(reverse("admin:index")).content.decode()
    assert rq_home not in viewer.get(reverse("admin:queues_jobrecord_dashboard")).content.decode()
    manager = admin_client_for(make_staff("view", "manage"))
    assert rq_home in manager.get(reverse("admin:index")).content.decode()
