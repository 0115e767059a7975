"""The job admin pages: who may see them, and that the list finds the right jobs."""

import datetime as dt
import re
import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from queues.constants import JobStatus, QueueName
from queues.models import JobAttempt, JobRecord
from tests.factories.admin import FinishedJobFactory, JobAttemptFactory, JobRecordFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:queues_jobrecord_changelist"


def _ids_on_page(response) -> set[str]:
    """Job ids listed on a changelist page (the checkbox values)."""
    return set(re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', response.content.decode()))


def _pages(job):
    return [
        reverse(CHANGELIST),
        reverse("admin:queues_jobrecord_change", args=[job.pk]),
        reverse("admin:queues_jobrecord_dashboard"),
    ]


def test_staff_with_view_permission_sees_every_page(make_staff, admin_client_for):
    job = FinishedJobFactory()
    client = admin_client_for(make_staff("view"))
    for url in _pages(job):
        response = client.get(url)
        assert response.status_code == 200, url
    index = client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:queues_jobrecord_dashboard") in index


def test_non_staff_and_anonymous_never_reach_the_admin(client, user):
    job = JobRecordFactory(owner=user)
    for url in _pages(job):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    client.force_login(user)  # logged in, but not staff
    for url in _pages(job):
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


def test_staff_without_view_permission_is_refused(make_staff, admin_client_for):
    job = JobRecordFactory()
    client = admin_client_for(make_staff())
    for url in _pages(job):
        assert client.get(url).status_code == 403, url


def test_detail_shows_payload_result_error_attempts_and_owner(superuser, admin_client_for, user):
    job = JobRecordFactory(
        owner=user,
        status=JobStatus.FAILED,
        attempts=2,
        max_attempts=2,
        payload={"value": "payload-marker"},
        error_code="never_works",
        error_message="it broke",
        error_traceback="Traceback (most recent call last):\n  boom",
        request_id="req-123",
    )
    JobAttemptFactory(job=job, number=1, outcome=JobAttempt.Outcome.RETRIED, error_message="first try broke")
    JobAttemptFactory(job=job, number=2, outcome=JobAttempt.Outcome.FAILED, error_message="it broke")
    page = admin_client_for(superuser).get(reverse("admin:queues_jobrecord_change", args=[job.pk])).content.decode()
    assert "payload-marker" in page
    assert "Traceback (most recent call last)" in page
    assert "#1 retried" in page and "#2 failed" in page and "first try broke" in page
    assert reverse("admin:auth_user_change", args=[user.pk]) in page
    assert "?q=req-123" in page  # other jobs of the same request
    # The retry action is offered for a failed job; cancel is not (it is final).
    assert reverse("admin:queues_jobrecord_act", args=[job.pk, "retry"]) in page
    assert reverse("admin:queues_jobrecord_act", args=[job.pk, "cancel"]) not in page


def test_chat_job_page_has_an_output_panel_that_degrades_without_the_endpoint(superuser, admin_client_for):
    job = JobRecordFactory(
        job_type="test_sleep", queue=QueueName.CHAT, status=JobStatus.STARTED, payload={"seconds": 1}
    )
    page = admin_client_for(superuser).get(reverse("admin:queues_jobrecord_change", args=[job.pk])).content.decode()
    assert 'id="slimy-output-panel"' in page
    from django.urls import Resolver404, resolve

    try:
        resolve(f"/api/jobs/{job.pk}/output")
    except Resolver404:
        assert "Live output is not available on this server" in page
    else:
        assert f'data-output-url="/api/jobs/{job.pk}/output"' in page


def test_list_filters_return_the_right_rows(superuser, admin_client_for, user, other_user):
    failed_chat = JobRecordFactory(queue=QueueName.CHAT, job_type="test_sleep", status=JobStatus.FAILED, owner=user)
    queued_db = JobRecordFactory(status=JobStatus.QUEUED, owner=other_user)
    done_audit = FinishedJobFactory(queue=QueueName.AUDIT, job_type="test_record", owner=user)
    old = FinishedJobFactory()
    JobRecord.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=400))
    client = admin_client_for(superuser)
    url = reverse(CHANGELIST)
    assert _ids_on_page(client.get(url, {"status": "failed"})) == {str(failed_chat.pk)}
    assert _ids_on_page(client.get(url, {"queue": "database"})) == {str(queued_db.pk), str(old.pk)}
    assert _ids_on_page(client.get(url, {"type": "test_record"})) == {str(done_audit.pk)}
    assert _ids_on_page(client.get(url, {"owner": "alice"})) == {str(failed_chat.pk), str(done_audit.pk)}
    assert _ids_on_page(client.get(url, {"owner": "alice", "status": "completed"})) == {str(done_audit.pk)}
    this_year = client.get(url, {"created_at__year": timezone.now().year})
    assert str(old.pk) not in _ids_on_page(this_year) and len(_ids_on_page(this_year)) == 3
    assert _ids_on_page(client.get(url, {"owner": "nobody"})) == set()


def test_search_by_job_id_request_id_owner_and_idempotency_key(superuser, admin_client_for, user):
    by_id = JobRecordFactory()
    by_request = JobRecordFactory(request_id="req-search-1")
    by_owner = JobRecordFactory(owner=user)
    by_key = JobRecordFactory(owner=superuser, idempotency_key="key-search-1")
    JobRecordFactory()  # matches nothing
    client = admin_client_for(superuser)
    url = reverse(CHANGELIST)
    assert _ids_on_page(client.get(url, {"q": str(by_id.pk)})) == {str(by_id.pk)}
    assert _ids_on_page(client.get(url, {"q": "req-search-1"})) == {str(by_request.pk)}
    assert _ids_on_page(client.get(url, {"q": "alice"})) == {str(by_owner.pk)}
    assert _ids_on_page(client.get(url, {"q": "key-search-1"})) == {str(by_key.pk)}
    assert _ids_on_page(client.get(url, {"q": str(uuid.uuid4())})) == set()


def test_list_is_sortable_by_duration_and_shows_coloured_status(superuser, admin_client_for):
    slow = FinishedJobFactory(started_at=timezone.now() - dt.timedelta(seconds=30))
    fast = FinishedJobFactory(started_at=timezone.now() - dt.timedelta(seconds=1))
    client = admin_client_for(superuser)
    page = client.get(reverse(CHANGELIST), {"o": "9"}).content.decode()  # 9th column: duration, ascending
    assert page.index(str(fast.pk)) < page.index(str(slow.pk))
    page = client.get(reverse(CHANGELIST), {"o": "-9"}).content.decode()
    assert page.index(str(slow.pk)) < page.index(str(fast.pk))
    assert "slimy-status" in page and "#2e7d32" in page  # completed is green


def test_read_only_staff_sees_no_actions_or_operations(make_staff, admin_client_for):
    job = JobRecordFactory(status=JobStatus.FAILED)
    client = admin_client_for(make_staff("view"))
    changelist = client.get(reverse(CHANGELIST)).content.decode()
    assert "retry_jobs" not in changelist and "cancel_jobs" not in changelist
    detail = client.get(reverse("admin:queues_jobrecord_change", args=[job.pk])).content.decode()
    assert "/act/" not in detail
    assert 'name="_save"' not in detail
    dashboard = client.get(reverse("admin:queues_jobrecord_dashboard")).content.decode()
    assert "slimy-pause-chat" not in dashboard and "slimy-retry-failed" not in dashboard


def test_detail_links_to_the_conversation_message_and_audit_events_it_touched(superuser, admin_client_for, user):
    from chat.models import Conversation, Message

    job = FinishedJobFactory(job_type="save_message", owner=user, request_id="req-links")
    conversation = Conversation.objects.create(owner=user, title="t", created_by_job_id=job.pk)
    message = Message.objects.create(conversation=conversation, author=user, role="user", content="hi", job_id=job.pk)
    JobRecord.objects.filter(pk=job.pk).update(payload={"conversation_id": str(conversation.pk), "content": "hi"})
    page = admin_client_for(superuser).get(reverse("admin:queues_jobrecord_change", args=[job.pk])).content.decode()
    assert reverse("admin:chat_conversation_change", args=[conversation.pk]) in page
    assert reverse("admin:chat_message_change", args=[message.pk]) in page
    assert f"{reverse('admin:audit_auditlog_changelist')}?resource_id={job.pk}" in page
    assert f"{reverse('admin:audit_auditlog_changelist')}?request_id=req-links" in page


def test_tenant_column_filter_and_detail(superuser, admin_client_for, user):
    guild = JobRecordFactory(queue=QueueName.CHAT, job_type="test_sleep", tenant="guild-77", owner=user)
    other = JobRecordFactory(queue=QueueName.CHAT, job_type="test_sleep", tenant=f"user:{user.pk}", owner=user)
    client = admin_client_for(superuser)
    url = reverse(CHANGELIST)
    page = client.get(url)
    assert "guild-77" in page.content.decode() and "column-tenant" in page.content.decode()
    assert _ids_on_page(client.get(url, {"tenant": "guild-77"})) == {str(guild.pk)}
    assert _ids_on_page(client.get(url, {"tenant": f"user:{user.pk}"})) == {str(other.pk)}
    assert _ids_on_page(client.get(url, {"tenant": "nobody"})) == set()
    detail = client.get(reverse("admin:queues_jobrecord_change", args=[guild.pk])).content.decode()
    assert "guild-77" in detail
