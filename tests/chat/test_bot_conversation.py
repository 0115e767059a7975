"""Replies within a conversation: its recent messages are the context; prompt and reply are saved once."""

import pytest
from asgiref.sync import async_to_sync

from chat.bot import SYSTEM_PROMPTS, ChatRequest, chat_bot_reply, reply_job_id
from chat.models import Message, PersonalityMode
from queues.constants import JobStatus
from queues.context import JobContext
from queues.models import JobRecord
from queues.services import job_enqueue, job_recover_abandoned, job_start
from tests.factories.chat import ConversationFactory, MessageFactory
from tests.fake_llm import Behaviour

pytestmark = pytest.mark.django_db(transaction=True)


def _ask(user, conversation, prompt="And what about tomorrow?", **payload):
    return job_enqueue(
        job_type="chat_bot_interaction",
        payload={"prompt": prompt, "conversationId": str(conversation.pk), **payload},
        owner=user,
    )


def _history(conversation, *pairs):
    for role, content in pairs:
        MessageFactory(conversation=conversation, role=role, content=content)


def test_every_personality_mode_has_a_system_prompt():
    assert set(SYSTEM_PROMPTS) == set(PersonalityMode.values)


def test_recent_messages_are_the_context_and_both_sides_are_saved(fake_llm, user, drain):
    conversation = ConversationFactory(owner=user)
    _history(conversation, ("user", "Will it rain today?"), ("assistant", "Yes, in the afternoon."))
    fake_llm.then(Behaviour(chunks=["Sunny", " tomorrow."]))
    record = drain(_ask(user, conversation))
    assert record.status == JobStatus.COMPLETED
    assert record.result["conversationId"] == str(conversation.pk)
    assert record.result["reply"] == "Sunny tomorrow."

    sent = fake_llm.completion_requests[0].body["messages"]
    assert sent[0]["role"] == "system"
    assert sent[1:] == [
        {"role": "user", "content": "Will it rain today?"},
        {"role": "assistant", "content": "Yes, in the afternoon."},
        {"role": "user", "content": "And what about tomorrow?"},
    ]
    saved = list(Message.objects.filter(conversation=conversation).order_by("created_at", "id"))
    assert [(m.role, m.content) for m in saved[2:]] == [
        ("user", "And what about tomorrow?"),
        ("assistant", "Sunny tomorrow."),
    ]
    prompt, reply = saved[2:]
    assert prompt.job_id == record.pk and prompt.author == user
    assert reply.job_id == reply_job_id(record.pk)


def test_context_keeps_the_newest_messages_within_the_token_budget(fake_llm, user, drain, settings):
    settings.CHAT_CONTEXT_TOKEN_BUDGET = 60  # ~ two 100-character messages (25 tokens + 4 each)
    conversation = ConversationFactory(owner=user)
    _history(conversation, *[("user" if n % 2 == 0 else "assistant", f"{n}" * 100) for n in range(5)])
    drain(_ask(user, conversation))
    sent = fake_llm.completion_requests[0].body["messages"]
    assert [m["content"] for m in sent[1:-1]] == ["3" * 100, "4" * 100]


def test_personality_defaults_to_the_conversation_and_can_be_overridden(fake_llm, user, drain):
    conversation = ConversationFactory(owner=user, personality_mode=PersonalityMode.CREATIVE)
    drain(_ask(user, conversation, "first"))
    drain(_ask(user, conversation, "second", personalityMode="professional"))
    first, second = fake_llm.completion_requests
    assert first.body["messages"][0]["content"] == SYSTEM_PROMPTS[PersonalityMode.CREATIVE]
    assert second.body["messages"][0]["content"] == SYSTEM_PROMPTS[PersonalityMode.PROFESSIONAL]
    modes = list(
        Message.objects.filter(conversation=conversation)
        .order_by("created_at", "id")
        .values_list("content", "personality_mode")
    )
    assert modes[0] == ("first", "creative") and modes[2] == ("second", "professional")


def test_a_rerun_of_the_same_job_saves_nothing_twice(fake_llm, user):
    """A worker that dies after saving but before the job completed runs it again under the same id."""
    conversation = ConversationFactory(owner=user)
    _history(conversation, ("user", "Hello"))
    job = _ask(user, conversation, "Tell me more")
    fake_llm.always(Behaviour(text="Here is more."))
    request = ChatRequest(prompt="Tell me more", owner_id=user.pk, conversation_id=str(conversation.pk))
    for attempt in (1, 2):
        started = job_start(job_id=job.pk, worker_name="w")
        assert started.attempts == attempt
        context = JobContext(
            job_id=str(job.pk),
            job_type=job.job_type,
            queue=job.queue,
            attempt=attempt,
            max_attempts=3,
            owner_id=user.pk,
            request_id="",
        )
        result = async_to_sync(chat_bot_reply)(request=request, context=context)
        assert result["reply"] == "Here is more."
        if attempt == 1:  # the worker died before recording the completion
            job_recover_abandoned(job_id=job.pk, reason="worker died")
            JobRecord.objects.filter(pk=job.pk).update(scheduled_for=None)
    assert Message.objects.filter(conversation=conversation).count() == 3
    # The second run did not see the first run's messages as history either.
    first, second = fake_llm.completion_requests
    assert first.body["messages"] == second.body["messages"]


def test_fallback_saves_the_prompt_but_not_the_canned_reply(fake_llm, user, drain, settings):
    settings.OPENAI_API_KEY = ""
    conversation = ConversationFactory(owner=user)
    record = drain(_ask(user, conversation, "anyone there?"))
    assert record.result["usedFallback"] is True and record.result["conversationId"] == str(conversation.pk)
    assert list(Message.objects.filter(conversation=conversation).values_list("role", "content")) == [
        ("user", "anyone there?")
    ]


def test_someone_elses_conversation_fails_the_job_permanently(fake_llm, user, other_user, drain):
    conversation = ConversationFactory(owner=other_user)
    _history(conversation, ("user", "private"))
    record = drain(_ask(user, conversation))
    assert record.status == JobStatus.FAILED and record.error_code == "conversation_not_found"
    assert record.attempts == 1
    assert fake_llm.requests == []
    assert Message.objects.filter(conversation=conversation).count() == 1


def test_api_accepts_own_conversation_and_hides_others(fake_llm, user, other_user, make_api_client):
    client = make_api_client(user)
    mine = ConversationFactory(owner=user)
    theirs = ConversationFactory(owner=other_user)
    ok = client.post("/api/chat/bot", {"prompt": "hi", "conversationId": str(mine.pk)}, format="json")
    assert ok.status_code == 202
    refused = client.post("/api/chat/bot", {"prompt": "hi", "conversationId": str(theirs.pk)}, format="json")
    assert refused.status_code == 404 and refused.json()["error"] == "conversation_not_found"


def test_conversation_deleted_while_answering_still_answers(fake_llm, user, run_worker):
    import threading

    from django.db import connection

    from queues.models import JobRecord

    conversation = ConversationFactory(owner=user)
    fake_llm.then(Behaviour(chunks=["still", " here"], hold_after=1))
    job = _ask(user, conversation)

    def delete_while_streaming():
        try:
            assert fake_llm.holding.wait(20)
            conversation.delete()
        finally:
            fake_llm.release()
            connection.close()

    deleter = threading.Thread(target=delete_while_streaming)
    deleter.start()
    run_worker()
    deleter.join(20)
    record = JobRecord.objects.get(pk=job.pk)
    assert record.status == JobStatus.COMPLETED
    assert record.result["reply"] == "still here" and record.result["conversationSaved"] is False
    assert not Message.objects.filter(job_id=job.pk).exists()
