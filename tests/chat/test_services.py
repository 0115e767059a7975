import threading
import time
import uuid

import pytest
from django.db import IntegrityError, connection, transaction

from chat.models import Conversation, ConversationTombstone, Message, MessageRole, PersonalityMode
from chat.selectors import ConversationNotFound
from chat.services import (
    conversation_create,
    conversation_delete,
    conversation_update,
    message_save,
    message_save_many,
)
from slimy_site.exceptions import ValidationFailed
from tests.factories.chat import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


# --- conversation_create


def test_conversation_create_stores_owner_title_mode_and_job(user):
    job_id = uuid.uuid4()
    conversation = conversation_create(
        owner_id=user.pk, title="  Trip plans ", personality_mode="creative", job_id=job_id
    )
    row = Conversation.objects.get(pk=conversation.pk)
    assert (row.owner_id, row.title, row.personality_mode, row.created_by_job_id) == (
        user.pk,
        "Trip plans",
        PersonalityMode.CREATIVE,
        job_id,
    )


def test_conversation_create_defaults_to_helpful_and_empty_title(user):
    conversation = conversation_create(owner_id=user.pk, job_id=None)
    assert conversation.personality_mode == PersonalityMode.HELPFUL
    assert conversation.title == ""


def test_conversation_create_is_idempotent_per_job_id(user):
    job_id = uuid.uuid4()
    first = conversation_create(owner_id=user.pk, title="a", job_id=job_id)
    again = conversation_create(owner_id=user.pk, title="a", job_id=str(job_id))
    assert again.pk == first.pk
    assert Conversation.objects.count() == 1


def test_conversation_create_with_another_owners_job_id_is_not_found(user, other_user):
    job_id = uuid.uuid4()
    conversation_create(owner_id=user.pk, job_id=job_id)
    with pytest.raises(ConversationNotFound):
        conversation_create(owner_id=other_user.pk, job_id=job_id)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"title": "x" * 201}, "title"),
        ({"personality_mode": "grumpy"}, "personality_mode"),
        ({"job_id": "not-a-uuid"}, "job_id"),
    ],
)
def test_conversation_create_rejects_bad_input(user, kwargs, field):
    kwargs = {"job_id": None, **kwargs}
    with pytest.raises(ValidationFailed) as exc:
        conversation_create(owner_id=user.pk, **kwargs)
    assert field in exc.value.details
    assert Conversation.objects.count() == 0


# --- conversation_update / conversation_delete


def test_conversation_update_changes_fields_and_bumps_updated_at(user):
    conversation = ConversationFactory(owner=user, title="old")
    updated = conversation_update(
        conversation_id=conversation.pk, owner_id=user.pk, title="new", personality_mode="casual"
    )
    assert (updated.title, updated.personality_mode) == ("new", "casual")
    assert updated.updated_at > conversation.updated_at
    # only what is given changes
    again = conversation_update(conversation_id=conversation.pk, owner_id=user.pk, personality_mode="professional")
    assert (again.title, again.personality_mode) == ("new", "professional")


def test_conversation_update_of_someone_elses_conversation_is_not_found(user, other_user):
    conversation = ConversationFactory(owner=other_user, title="theirs")
    with pytest.raises(ConversationNotFound):
        conversation_update(conversation_id=conversation.pk, owner_id=user.pk, title="mine now")
    assert Conversation.objects.get(pk=conversation.pk).title == "theirs"


def test_conversation_update_without_changes_is_invalid(user):
    conversation = ConversationFactory(owner=user)
    with pytest.raises(ValidationFailed):
        conversation_update(conversation_id=conversation.pk, owner_id=user.pk)


def test_conversation_delete_removes_messages_and_leaves_a_tombstone(user):
    conversation = ConversationFactory(owner=user)
    MessageFactory.create_batch(3, conversation=conversation)
    job_id = uuid.uuid4()
    tombstone = conversation_delete(conversation_id=conversation.pk, owner_id=user.pk, job_id=job_id)
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert Message.objects.count() == 0
    assert (tombstone.message_count, tombstone.deleted_by_job_id) == (3, job_id)
    # a retried delete answers with the same tombstone
    again = conversation_delete(conversation_id=conversation.pk, owner_id=user.pk, job_id=job_id)
    assert again.pk == tombstone.pk
    assert ConversationTombstone.objects.count() == 1


def test_conversation_delete_of_someone_elses_or_unknown_conversation_is_not_found(user, other_user):
    theirs = ConversationFactory(owner=other_user)
    with pytest.raises(ConversationNotFound):
        conversation_delete(conversation_id=theirs.pk, owner_id=user.pk)
    assert Conversation.objects.filter(pk=theirs.pk).exists()
    conversation_delete(conversation_id=theirs.pk, owner_id=other_user.pk)
    # their tombstone is not mine either
    with pytest.raises(ConversationNotFound):
        conversation_delete(conversation_id=theirs.pk, owner_id=user.pk)
    with pytest.raises(ConversationNotFound):
        conversation_delete(conversation_id=uuid.uuid4(), owner_id=user.pk)


# --- message_save


def test_message_save_appends_and_bumps_the_conversation(user):
    conversation = ConversationFactory(owner=user, personality_mode="creative")
    before = conversation.updated_at
    message = message_save(
        conversation_id=conversation.pk, owner_id=user.pk, role="user", content="hello", job_id=uuid.uuid4()
    )
    row = Message.objects.get(pk=message.pk)
    assert (row.conversation_id, row.author_id, row.role, row.content, row.personality_mode) == (
        conversation.pk,
        user.pk,
        MessageRole.USER,
        "hello",
        "creative",
    )
    assert Conversation.objects.get(pk=conversation.pk).updated_at > before


def test_message_save_assistant_message_has_no_author_and_its_own_mode(user):
    conversation = ConversationFactory(owner=user)
    message = message_save(
        conversation_id=conversation.pk,
        owner_id=user.pk,
        role="assistant",
        content="hi!",
        personality_mode="casual",
        job_id=None,
    )
    assert (message.author_id, message.personality_mode) == (None, "casual")


def test_message_save_is_idempotent_per_job_id(user):
    conversation = ConversationFactory(owner=user)
    job_id = uuid.uuid4()
    first = message_save(conversation_id=conversation.pk, owner_id=user.pk, role="user", content="once", job_id=job_id)
    again = message_save(conversation_id=conversation.pk, owner_id=user.pk, role="user", content="once", job_id=job_id)
    assert again.pk == first.pk
    assert Message.objects.filter(conversation=conversation).count() == 1


def test_message_save_to_someone_elses_conversation_is_not_found(user, other_user):
    theirs = ConversationFactory(owner=other_user)
    with pytest.raises(ConversationNotFound):
        message_save(conversation_id=theirs.pk, owner_id=user.pk, role="user", content="hi", job_id=uuid.uuid4())
    with pytest.raises(ConversationNotFound):
        message_save(conversation_id="nope", owner_id=user.pk, role="user", content="hi", job_id=None)
    assert Message.objects.count() == 0


def test_message_save_replay_of_someone_elses_job_is_not_found(user, other_user):
    theirs = ConversationFactory(owner=other_user)
    job_id = uuid.uuid4()
    message_save(conversation_id=theirs.pk, owner_id=other_user.pk, role="user", content="hi", job_id=job_id)
    with pytest.raises(ConversationNotFound):
        message_save(conversation_id=theirs.pk, owner_id=user.pk, role="user", content="hi", job_id=job_id)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"content": "x" * 10_001}, "content"),
        ({"content": "   "}, "content"),
        ({"role": "robot"}, "role"),
        ({"personality_mode": "grumpy"}, "personality_mode"),
    ],
)
def test_message_save_rejects_bad_input(user, kwargs, field):
    conversation = ConversationFactory(owner=user)
    kwargs = {"role": "user", "content": "ok", **kwargs}
    with pytest.raises(ValidationFailed) as exc:
        message_save(conversation_id=conversation.pk, owner_id=user.pk, job_id=None, **kwargs)
    assert field in exc.value.details


def test_message_save_many_writes_in_order_once_per_job_id_sharing_its_lookups(user, django_assert_max_num_queries):
    from audit.models import AuditStagedEvent

    conversation = ConversationFactory(owner=user, personality_mode="casual")
    prompt_job, reply_job = uuid.uuid4(), uuid.uuid4()
    messages = [("user", "question", prompt_job), ("assistant", "answer", reply_job)]
    # existing messages, conversation, two inserts, the bump, the owner, the audit events (+ savepoints)
    with django_assert_max_num_queries(11):
        first = message_save_many(conversation_id=conversation.pk, owner_id=user.pk, messages=messages)
    rows = list(Message.objects.filter(conversation=conversation).order_by("created_at", "id"))
    assert [(m.pk, m.role, m.content, m.job_id, m.personality_mode) for m in rows] == [
        (first[0].pk, "user", "question", prompt_job, "casual"),
        (first[1].pk, "assistant", "answer", reply_job, "casual"),
    ]
    assert [e.event["action"] for e in AuditStagedEvent.objects.order_by("id")] == ["message.saved"] * 2
    # A retry writes nothing and returns the same rows; one written already is returned, the other added.
    assert [m.pk for m in message_save_many(conversation_id=conversation.pk, owner_id=user.pk, messages=messages)] == [
        m.pk for m in first
    ]
    later = uuid.uuid4()
    again = message_save_many(
        conversation_id=conversation.pk, owner_id=user.pk, messages=[messages[1], ("assistant", "more", later)]
    )
    assert again[0].pk == first[1].pk and Message.objects.get(job_id=later).content == "more"
    assert Message.objects.filter(conversation=conversation).count() == 3


def test_message_content_limit_is_enforced_by_the_database_too(user):
    conversation = ConversationFactory(owner=user)
    MessageFactory(conversation=conversation, content="x" * 10_000)
    with pytest.raises(IntegrityError), transaction.atomic():
        MessageFactory(conversation=conversation, content="x" * 10_001)


@pytest.mark.django_db(transaction=True)
def test_message_save_concurrent_delivery_of_the_same_job_writes_once(user):
    """A second delivery that loses the insert race returns the winner's row (the IntegrityError path)."""
    conversation = ConversationFactory(owner=user)
    job_id = uuid.uuid4()
    results = []

    def second_delivery():
        try:
            results.append(
                message_save(
                    conversation_id=conversation.pk, owner_id=user.pk, role="user", content="race", job_id=job_id
                )
            )
        finally:
            connection.close()

    with transaction.atomic():
        winner = Message.objects.create(
            conversation=conversation, role="user", content="race", job_id=job_id, author=user
        )
        thread = threading.Thread(target=second_delivery)
        thread.start()
        time.sleep(0.5)  # the other delivery now waits on the unique index for this transaction
    thread.join(10)
    assert [m.pk for m in results] == [winner.pk]
    assert Message.objects.filter(job_id=job_id).count() == 1
