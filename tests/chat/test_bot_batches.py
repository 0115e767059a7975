"""Replies in flight together share their database trips (chat.bot._DbBatch): their prompts are read in
one trip and their side effects recorded in one transaction, and each reply still gets its own answer."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

import chat.bot
from audit.models import AuditStagedEvent
from chat.bot import ChatRequest, chat_bot_reply, reply_job_id
from chat.models import Message
from queues.context import JobContext
from queues.definitions import JobCancelled, PermanentJobError
from queues.models import JobRecord
from queues.services import job_enqueue, job_start
from tests.factories.chat import ConversationFactory, MessageFactory
from tests.fake_llm import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def _started(user, conversation=None, prompt="What now?"):
    payload = {"prompt": prompt}
    if conversation is not None:
        payload["conversationId"] = str(conversation.pk)
    job = job_enqueue(job_type="chat_bot_interaction", payload=payload, owner=user)
    return job_start(job_id=job.pk, worker_name="test")


def _reply(record, user):
    context = JobContext(
        job_id=str(record.pk),
        job_type=record.job_type,
        queue=record.queue,
        attempt=record.attempts,
        max_attempts=record.max_attempts,
        owner_id=user.pk,
        request_id="",
    )
    request = ChatRequest(
        prompt=record.payload["prompt"], owner_id=user.pk, conversation_id=record.payload.get("conversationId")
    )
    return chat_bot_reply(request=request, context=context)


def _run(scenario):
    """Run the scenario on a loop of its own; the database session of asgiref's thread is closed after."""

    async def main():
        try:
            return await scenario()
        finally:
            await sync_to_async(connections.close_all, thread_sensitive=True)()

    return asyncio.run(main())


@pytest.fixture
def trips(monkeypatch):
    """How many items each trip of the two batched database functions carried (the functions themselves run)."""
    seen: dict = {"_prompts": [], "_record_replies": [], "before_record": None}
    for name in ("_prompts", "_record_replies"):
        real = getattr(chat.bot, name)

        def spy(items, real=real, name=name):
            seen[name].append(len(items))
            if name == "_record_replies" and seen["before_record"] is not None:
                seen["before_record"]()
            return real(items)

        monkeypatch.setattr(chat.bot, name, spy)
    # Wide enough that replies streamed by the test server in turn still meet in one batch.
    monkeypatch.setattr(chat.bot, "RECORD_BATCH_DELAY", 0.5)
    return seen


def test_replies_together_each_get_their_own_answer_in_shared_trips(fake_llm, user, other_user, trips):
    fake_llm.always(Behaviour(chunks=["Fine", " thanks."]))
    shared = ConversationFactory(owner=user)
    MessageFactory(conversation=shared, role="user", content="Earlier question")
    alone = ConversationFactory(owner=user)
    foreign = ConversationFactory(owner=other_user)
    first, second = _started(user, shared, "First?"), _started(user, shared, "Second?")
    superseded = _started(user, alone, "Too late?")
    # Another attempt takes this one over after its reply streamed, just before the replies are recorded.
    trips["before_record"] = lambda: JobRecord.objects.filter(pk=superseded.pk).update(attempts=2)
    refused = _started(user, foreign)
    plain = _started(user)

    async def together():
        return await asyncio.gather(
            *(_reply(r, user) for r in (first, second, superseded, refused, plain)), return_exceptions=True
        )

    answers = _run(together)
    first_result, second_result, cancelled, not_found, plain_result = answers
    assert first_result["reply"] == second_result["reply"] == plain_result["reply"] == "Fine thanks."
    assert first_result["conversationId"] == str(shared.pk) and "conversationId" not in plain_result
    assert "conversationSaved" not in first_result and "conversationSaved" not in second_result
    assert isinstance(cancelled, JobCancelled)
    assert isinstance(not_found, PermanentJobError) and not_found.code == "conversation_not_found"

    # Both replies of the shared conversation are saved, each prompt before its reply, one reply after
    # the other; the earlier message was the context of both.
    saved = [(m.job_id, m.role) for m in Message.objects.filter(conversation=shared).order_by("created_at", "id")]
    order = sorted([first, second], key=lambda r: saved.index((r.pk, "user")))
    assert saved[1:] == [
        (order[0].pk, "user"),
        (reply_job_id(order[0].pk), "assistant"),
        (order[1].pk, "user"),
        (reply_job_id(order[1].pk), "assistant"),
    ]
    sent = [r.body["messages"] for r in fake_llm.completion_requests]
    assert len(sent) == 4
    assert sum(1 for m in sent if {"role": "user", "content": "Earlier question"} in m) == 2
    # The superseded attempt wrote nothing.
    assert not Message.objects.filter(conversation=alone).exists()
    # One interaction event per recorded reply, one per saved message.
    events = [e.event for e in AuditStagedEvent.objects.all()]
    interactions = sorted(e["resourceId"] for e in events if e["action"] == "chat_bot_interaction")
    assert interactions == sorted(str(r.pk) for r in (first, second, plain))
    assert sum(1 for e in events if e["action"] == "message.saved") == 4

    # Five prompts in one trip; the four replies that got that far recorded in one (the fence refused one).
    assert trips["_prompts"] == [5]
    assert trips["_record_replies"] == [4]


def test_a_reply_whose_conversation_is_gone_by_then_is_answered_but_not_saved(fake_llm, user, trips):
    fake_llm.always(Behaviour(chunks=["Still", " here."]))
    kept, dropped = ConversationFactory(owner=user), ConversationFactory(owner=user)
    records = [_started(user, kept), _started(user, dropped)]

    async def together():
        replies = [asyncio.ensure_future(_reply(r, user)) for r in records]
        while not fake_llm.completion_requests or len(fake_llm.completion_requests) < 2:
            await asyncio.sleep(0.01)
        await sync_to_async(dropped.delete, thread_sensitive=True)()
        return await asyncio.gather(*replies)

    kept_result, dropped_result = _run(together)
    assert kept_result["reply"] == dropped_result["reply"] == "Still here."
    assert "conversationSaved" not in kept_result and dropped_result["conversationSaved"] is False
    assert Message.objects.filter(conversation=kept).count() == 2
    assert trips["_record_replies"] == [2]
