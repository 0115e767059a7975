"""Every conversation job type through a real RQ worker, including retries after a crash."""

import time

import pytest

from chat import services
from chat.models import Conversation, ConversationTombstone, Message
from queues.constants import JobStatus
from queues.models import JobRecord
from queues.services import job_enqueue, job_recover_abandoned, job_start
from tests.factories.chat import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _run(run_worker, job):
    run_worker(["database"])
    return JobRecord.objects.get(pk=job.pk)


def _drain(run_worker, job, timeout=20.0):
    """Run burst workers (with the scheduler) until the job is final; a retry waits for its backoff."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run_worker(["database"])
        record = JobRecord.objects.get(pk=job.pk)
        if record.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            return record
        time.sleep(0.2)
    raise AssertionError(f"job still {record.status}")


def test_create_conversation(run_worker, user):
    job = job_enqueue(
        job_type="create_conversation", payload={"title": "Ideas", "personality_mode": "creative"}, owner=user
    )
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    conversation = Conversation.objects.get()
    assert (conversation.owner_id, conversation.title, conversation.personality_mode) == (user.pk, "Ideas", "creative")
    assert conversation.created_by_job_id == job.pk
    assert record.result["conversationId"] == str(conversation.pk)
    assert record.result["createdAt"].endswith("Z")
    assert record.result["personalityMode"] == "creative"


def test_save_message(run_worker, user):
    conversation = ConversationFactory(owner=user, personality_mode="professional")
    job = job_enqueue(
        job_type="save_message",
        owner=user,
        payload={"conversation_id": str(conversation.pk), "role": "user", "content": "hello"},
    )
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    message = Message.objects.get()
    assert (message.content, message.job_id, message.author_id, message.personality_mode) == (
        "hello",
        job.pk,
        user.pk,
        "professional",
    )
    assert record.result == {
        "messageId": str(message.pk),
        "conversationId": str(conversation.pk),
        "role": "user",
        "createdAt": record.result["createdAt"],
    }


def test_update_conversation(run_worker, user):
    conversation = ConversationFactory(owner=user, title="old")
    job = job_enqueue(
        job_type="update_conversation", owner=user, payload={"conversation_id": str(conversation.pk), "title": "new"}
    )
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    assert Conversation.objects.get().title == "new"
    assert (record.result["title"], record.result["personalityMode"]) == ("new", "helpful")


def test_delete_conversation(run_worker, user):
    conversation = ConversationFactory(owner=user)
    MessageFactory.create_batch(2, conversation=conversation)
    job = job_enqueue(job_type="delete_conversation", owner=user, payload={"conversation_id": str(conversation.pk)})
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    assert not Conversation.objects.exists() and not Message.objects.exists()
    assert record.result["deleted"] is True
    assert (record.result["conversationId"], record.result["deletedMessages"]) == (str(conversation.pk), 2)


def test_get_conversations_returns_real_counts_paginated(run_worker, user, other_user):
    first, second, third = ConversationFactory.create_batch(3, owner=user)
    MessageFactory.create_batch(3, conversation=first)
    MessageFactory(conversation=third)  # factories do not bump updated_at: newest first is third, second, first
    ConversationFactory(owner=other_user)
    job = job_enqueue(job_type="get_conversations", owner=user, payload={"limit": 2, "offset": 1})
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    assert [(c["conversationId"], c["messageCount"]) for c in record.result["conversations"]] == [
        (str(second.pk), 0),
        (str(first.pk), 3),
    ]
    assert record.result["pagination"] == {"limit": 2, "offset": 1, "total": 3, "hasMore": False}


def test_get_messages_returns_messages_in_order_paginated(run_worker, user):
    conversation = ConversationFactory(owner=user)
    messages = [MessageFactory(conversation=conversation, content=f"m{i}") for i in range(4)]
    job = job_enqueue(
        job_type="get_messages", owner=user, payload={"conversation_id": str(conversation.pk), "limit": 3}
    )
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    assert [m["content"] for m in record.result["messages"]] == ["m0", "m1", "m2"]
    assert record.result["messages"][0]["messageId"] == str(messages[0].pk)
    assert record.result["pagination"] == {"limit": 3, "offset": 0, "total": 4, "hasMore": True}


@pytest.mark.parametrize(
    "job_type, payload",
    [
        ("save_message", {"role": "user", "content": "sneaky"}),
        ("update_conversation", {"title": "mine now"}),
        ("delete_conversation", {}),
        ("get_messages", {}),
    ],
)
def test_a_job_naming_someone_elses_conversation_fails_permanently(run_worker, user, other_user, job_type, payload):
    theirs = ConversationFactory(owner=other_user, title="theirs")
    MessageFactory(conversation=theirs, content="private")
    job = job_enqueue(job_type=job_type, owner=user, payload={"conversation_id": str(theirs.pk), **payload})
    record = _run(run_worker, job)
    assert (record.status, record.error_code, record.attempts) == (JobStatus.FAILED, "conversation_not_found", 1)
    assert record.result is None
    theirs.refresh_from_db()
    assert theirs.title == "theirs"
    assert list(Message.objects.values_list("content", flat=True)) == ["private"]


def test_a_job_without_an_owner_fails_permanently(run_worker):
    job = job_enqueue(job_type="create_conversation", payload={})
    record = _run(run_worker, job)
    assert (record.status, record.error_code) == (JobStatus.FAILED, "owner_required")
    assert not Conversation.objects.exists()


# --- Crash between the write and the job's completion: the next attempt must not write again.


def test_save_message_rerun_after_its_write_committed_writes_nothing_new(run_worker, user):
    conversation = ConversationFactory(owner=user)
    job = job_enqueue(
        job_type="save_message",
        owner=user,
        payload={"conversation_id": str(conversation.pk), "role": "user", "content": "once"},
    )
    # The first attempt's write committed, then the worker died before marking the job completed.
    written = services.message_save(
        conversation_id=conversation.pk, owner_id=user.pk, role="user", content="once", job_id=job.pk
    )
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    assert list(Message.objects.values_list("pk", flat=True)) == [written.pk]
    assert record.result["messageId"] == str(written.pk)


def test_create_conversation_rerun_after_its_write_committed_writes_nothing_new(run_worker, user):
    job = job_enqueue(job_type="create_conversation", payload={"title": "t"}, owner=user)
    written = services.conversation_create(owner_id=user.pk, title="t", job_id=job.pk)
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    assert list(Conversation.objects.values_list("pk", flat=True)) == [written.pk]
    assert record.result["conversationId"] == str(written.pk)


def test_delete_conversation_rerun_after_its_write_committed_still_succeeds(run_worker, user):
    conversation = ConversationFactory(owner=user)
    job = job_enqueue(job_type="delete_conversation", owner=user, payload={"conversation_id": str(conversation.pk)})
    services.conversation_delete(conversation_id=conversation.pk, owner_id=user.pk, job_id=job.pk)
    record = _run(run_worker, job)
    assert record.status == JobStatus.COMPLETED
    assert record.result["conversationId"] == str(conversation.pk)
    assert ConversationTombstone.objects.count() == 1


def test_save_message_attempt_abandoned_by_a_dead_worker_is_retried_without_a_second_row(run_worker, user):
    """The whole path: attempt 1 starts and writes, its worker dies, the reconciler hands the job back."""
    conversation = ConversationFactory(owner=user)
    job = job_enqueue(
        job_type="save_message",
        owner=user,
        payload={"conversation_id": str(conversation.pk), "role": "user", "content": "once"},
    )
    # Attempt 1 as a worker that then died: started, wrote, never finished.
    assert job_start(job_id=job.pk, worker_name="dead-worker") is not None
    services.message_save(conversation_id=conversation.pk, owner_id=user.pk, role="user", content="once", job_id=job.pk)
    assert job_recover_abandoned(job_id=job.pk, reason="worker died") == JobStatus.RETRYING

    record = _drain(run_worker, job)

    assert (record.status, record.attempts) == (JobStatus.COMPLETED, 2)
    assert [a.outcome for a in record.attempt_history.all()] == ["abandoned", "completed"]
    assert Message.objects.filter(conversation=conversation).count() == 1
