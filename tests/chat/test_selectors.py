import datetime as dt
import uuid

import pytest
from django.utils import timezone

from chat.models import Conversation
from chat.selectors import (
    ConversationNotFound,
    conversation_get_for_owner,
    conversation_page_for_owner,
    db_job_get_for_owner,
    message_list_recent,
    message_page,
)
from queues.selectors import JobNotFound
from queues.services import job_enqueue
from tests.factories.chat import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


def _set_updated(conversation, minutes_ago):
    Conversation.objects.filter(pk=conversation.pk).update(
        updated_at=timezone.now() - dt.timedelta(minutes=minutes_ago)
    )


def test_conversation_page_is_mine_newest_first_with_real_message_counts(user, other_user):
    old, new, empty = ConversationFactory.create_batch(3, owner=user)
    _set_updated(old, 30)
    _set_updated(new, 1)
    _set_updated(empty, 10)
    MessageFactory.create_batch(2, conversation=old)
    MessageFactory.create_batch(5, conversation=new)
    MessageFactory.create_batch(4, conversation=ConversationFactory(owner=other_user))

    page = conversation_page_for_owner(owner_id=user.pk, limit=10, offset=0)

    assert [(c.pk, c.message_count) for c in page.items] == [(new.pk, 5), (empty.pk, 0), (old.pk, 2)]
    assert (page.total, page.has_more) == (3, False)


def test_conversation_page_paginates(user):
    conversations = ConversationFactory.create_batch(5, owner=user)
    for minutes, conversation in enumerate(conversations):
        _set_updated(conversation, minutes)

    page = conversation_page_for_owner(owner_id=user.pk, limit=2, offset=2)
    assert [c.pk for c in page.items] == [conversations[2].pk, conversations[3].pk]
    assert (page.total, page.limit, page.offset, page.has_more) == (5, 2, 2, True)
    last = conversation_page_for_owner(owner_id=user.pk, limit=2, offset=4)
    assert [c.pk for c in last.items] == [conversations[4].pk]
    assert last.has_more is False


def test_conversation_page_clamps_the_limit(user):
    ConversationFactory.create_batch(3, owner=user)
    assert conversation_page_for_owner(owner_id=user.pk, limit=10_000).limit == 100
    assert len(conversation_page_for_owner(owner_id=user.pk, limit=0).items) == 1


def test_conversation_page_query_count_does_not_grow_with_conversations(user, django_assert_num_queries):
    for conversation in ConversationFactory.create_batch(6, owner=user):
        MessageFactory.create_batch(2, conversation=conversation)
    with django_assert_num_queries(2):  # the page with its counts, and the total
        page = conversation_page_for_owner(owner_id=user.pk, limit=20)
        assert [c.message_count for c in page.items] == [2] * 6


def test_conversation_get_for_owner(user, other_user):
    mine = ConversationFactory(owner=user)
    MessageFactory.create_batch(2, conversation=mine)
    assert conversation_get_for_owner(conversation_id=str(mine.pk), owner_id=user.pk).message_count == 2
    for conversation_id in (ConversationFactory(owner=other_user).pk, uuid.uuid4(), "not-a-uuid", None):
        with pytest.raises(ConversationNotFound) as exc:
            conversation_get_for_owner(conversation_id=conversation_id, owner_id=user.pk)
        assert (exc.value.code, exc.value.status) == ("conversation_not_found", 404)


def test_message_page_is_in_order_and_paginated(user):
    conversation = ConversationFactory(owner=user)
    messages = [MessageFactory(conversation=conversation) for _ in range(5)]
    MessageFactory(conversation=ConversationFactory(owner=user))  # another conversation's
    page = message_page(conversation_id=conversation.pk, limit=3, offset=1)
    assert [m.pk for m in page.items] == [m.pk for m in messages[1:4]]
    assert (page.total, page.has_more) == (5, True)


def test_message_list_recent_is_the_last_n_oldest_first(user):
    conversation = ConversationFactory(owner=user)
    messages = [MessageFactory(conversation=conversation, content=f"m{i}") for i in range(6)]
    assert [m.content for m in message_list_recent(conversation_id=conversation.pk, limit=3)] == ["m3", "m4", "m5"]
    assert [m.pk for m in message_list_recent(conversation_id=conversation.pk, limit=50)] == [m.pk for m in messages]
    assert message_list_recent(conversation_id=conversation.pk, limit=0) == []


def test_db_job_get_for_owner_only_returns_my_database_jobs(user, other_user):
    mine = job_enqueue(job_type="get_conversations", payload={}, owner=user)
    assert db_job_get_for_owner(job_id=str(mine.pk), owner_id=user.pk).pk == mine.pk
    theirs = job_enqueue(job_type="get_conversations", payload={}, owner=other_user)
    chat_queue_job = job_enqueue(job_type="test_sleep", payload={"seconds": 0}, owner=user)
    for job_id in (theirs.pk, chat_queue_job.pk, uuid.uuid4(), "junk"):
        with pytest.raises(JobNotFound):
            db_job_get_for_owner(job_id=job_id, owner_id=user.pk)
