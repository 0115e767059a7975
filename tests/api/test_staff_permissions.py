"""Staff powers over other users' jobs follow the admin's permissions (view / retry / cancel)."""

import pytest
from django.contrib.auth.models import Permission

from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


def _grant(user, *codenames):
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="queues", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)  # fresh permission cache


def _failed_job(owner):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=owner)
    JobRecord.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, attempts=1)
    return job


def test_staff_without_permissions_are_ordinary_owners(member, bare_staff, make_api_client):
    theirs = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member, delay=60)
    failed = _failed_job(member)
    client = make_api_client(bare_staff)
    for response in (
        client.get(f"/api/jobs/{theirs.pk}"),
        client.post(f"/api/jobs/{theirs.pk}/cancel"),
        client.post(f"/api/jobs/{failed.pk}/retry"),
        client.get(f"/api/jobs/{theirs.pk}/output"),
    ):
        assert response.status_code == 404 and response.json()["error"] == "job_not_found"
    assert JobRecord.objects.get(pk=theirs.pk).status == JobStatus.SCHEDULED
    assert JobRecord.objects.get(pk=failed.pk).status == JobStatus.FAILED
    listing = client.get("/api/jobs", {"owner": "*"})
    assert listing.status_code == 403 and listing.json()["error"] == "permission_denied"
    # Their own jobs stay theirs to cancel.
    own = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=bare_staff, delay=60)
    assert client.post(f"/api/jobs/{own.pk}/cancel").json()["status"] == "cancelled"


def test_view_permission_reads_but_does_not_cancel_or_retry(member, bare_staff, make_api_client):
    waiting = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member, delay=60)
    failed = _failed_job(member)
    client = make_api_client(_grant(bare_staff, "view_jobrecord"))
    assert client.get(f"/api/jobs/{waiting.pk}").status_code == 200
    assert {j["jobId"] for j in client.get("/api/jobs", {"owner": "mia"}).json()["results"]} == {
        str(waiting.pk),
        str(failed.pk),
    }
    assert client.post(f"/api/jobs/{waiting.pk}/cancel").status_code == 404
    assert client.post(f"/api/jobs/{failed.pk}/retry").status_code == 404
    assert JobRecord.objects.get(pk=waiting.pk).status == JobStatus.SCHEDULED


def test_cancel_and_retry_permissions_each_allow_their_action(member, bare_staff, make_api_client):
    waiting = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member, delay=60)
    failed = _failed_job(member)
    canceller = make_api_client(_grant(bare_staff, "cancel_jobrecord"))
    assert canceller.post(f"/api/jobs/{failed.pk}/retry").status_code == 404
    assert canceller.post(f"/api/jobs/{waiting.pk}/cancel").json()["status"] == "cancelled"
    retrier = make_api_client(_grant(bare_staff, "retry_jobrecord"))
    assert retrier.post(f"/api/jobs/{failed.pk}/retry").status_code == 202


def test_permissions_without_staff_status_grant_nothing(member, other_member, make_api_client):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member, delay=60)
    client = make_api_client(_grant(other_member, "view_jobrecord", "cancel_jobrecord"))
    assert client.get(f"/api/jobs/{job.pk}").status_code == 404
    assert client.post(f"/api/jobs/{job.pk}/cancel").status_code == 404
