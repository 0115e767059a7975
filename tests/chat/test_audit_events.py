"""Conversation writes leave an audit trail: one event per change, none for a replayed job."""

import pytest

from audit.models import AuditLog
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


def _events(action):
    return list(AuditLog.objects.filter(action=action).order_by("id"))


def test_each_conversation_change_is_audited_once(run_worker, user):
    create = job_enqueue(job_type="create_conversation", payload={"title": "Plans"}, owner=user)
    run_worker(["database"])
    conversation_id = JobRecord.objects.get(pk=create.pk).result["conversationId"]
    job_enqueue(
        job_type="save_message",
        owner=user,
        payload={"conversation_id": conversation_id, "role": "user", "content": "password=hunter2 hi"},
    )
    job_enqueue(job_type="update_conversation", owner=user, payload={"conversation_id": conversation_id, "title": "X"})
    run_worker(["database"])
    job_enqueue(job_type="delete_conversation", owner=user, payload={"conversation_id": conversation_id})
    run_worker(["database"])
    run_worker(["audit"])
    assert JobRecord.objects.exclude(status=JobStatus.COMPLETED).count() == 0

    for action in ("conversation.created", "message.saved", "conversation.updated", "conversation.deleted"):
        events = _events(action)
        assert len(events) == 1, action
        assert events[0].resource_type == "conversation" and events[0].resource_id == conversation_id
        assert events[0].actor_id == user.pk
    saved = _events("message.saved")[0]
    assert saved.details["contentLength"] == len("password=hunter2 hi")
    assert "hunter2" not in str(saved.details)  # lengths, never content


def test_replayed_create_job_records_no_second_event(run_worker, user):
    from chat.services import conversation_create

    create = job_enqueue(job_type="create_conversation", payload={}, owner=user)
    # The write committed, then the process died before the job was marked completed:
    conversation_create(owner_id=user.pk, job_id=create.pk)
    run_worker(["database"])
    run_worker(["audit"])
    assert len(_events("conversation.created")) == 1
