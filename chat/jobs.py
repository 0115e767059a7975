"""Job types of the chat app.

`database` queue: the conversation and message jobs below. Each acts for the job's owner only,
calls one service or selector, and returns small JSON. Retrying any of them is safe: the writes
are keyed by the job id (or are naturally repeatable), so a crash after the write but before the
job was marked completed does not write twice.

`chat` queue: `chat_bot_interaction`, one LLM reply (chat.bot), which always completes with an answer.
"""

from __future__ import annotations

from contextlib import contextmanager

from django.conf import settings
from rest_framework import serializers

from chat import selectors, services
from chat.bot import ChatRequest, chat_bot_reply
from chat.models import MAX_CONTENT_LENGTH, MAX_TITLE_LENGTH, MessageRole, PersonalityMode
from chat.serializers import conversation_data, iso, message_data, pagination_data
from queues.constants import QueueName
from queues.definitions import JobDefinition, PermanentJobError, RetryPolicy
from slimy_site.exceptions import ValidationFailed
from slimy_site.serializers import NonBlankCharField, TypedSerializer


@contextmanager
def _as_permanent():
    """Domain errors a retry cannot fix become permanent job failures with the same code."""
    try:
        yield
    except selectors.ConversationNotFound as exc:
        raise PermanentJobError(exc.message, code="conversation_not_found") from exc
    except ValidationFailed as exc:
        raise PermanentJobError(f"{exc.message} {exc.details or ''}".strip(), code="invalid_payload") from exc


def _owner(context) -> int:
    if context.owner_id is None:
        raise PermanentJobError("This job type needs an owner.", code="owner_required")
    return context.owner_id


class _DatabaseJob(JobDefinition):
    queue = QueueName.DATABASE
    timeout = 30


# --- Conversation and message jobs (`database` queue).


class TitleField(serializers.CharField):
    def __init__(self, **kwargs):
        super().__init__(max_length=MAX_TITLE_LENGTH, allow_blank=True, allow_null=True, trim_whitespace=True, **kwargs)


class CreateConversationPayload(serializers.Serializer):
    title = TitleField(required=False, default=None)
    personality_mode = serializers.ChoiceField(
        choices=PersonalityMode.choices, required=False, default=PersonalityMode.HELPFUL
    )


def plain_title(value):
    """A title as TitleField takes it (None, or text trimmed to at most MAX_TITLE_LENGTH characters),
    or UNCHECKED when the value needs the field's own validation (another type, too long, a NUL)."""
    if value is None:
        return None
    if type(value) is not str or "\x00" in value:
        return UNCHECKED
    value = value.strip()
    return value if len(value) <= MAX_TITLE_LENGTH else UNCHECKED


UNCHECKED = object()
_PERSONALITY_MODES = frozenset(PersonalityMode.values)


def plain_mode(value):
    """A personality mode as its ChoiceField takes it, or UNCHECKED when the field must word the error."""
    return value if type(value) is str and value in _PERSONALITY_MODES else UNCHECKED


class CreateConversationJob(_DatabaseJob):
    name = "create_conversation"
    payload_serializer = CreateConversationPayload

    @classmethod
    def validate(cls, payload):
        # Plain code for what is plainly valid (every submission, and again when it runs): the serializer's
        # field copies cost more than the job's own work. Anything else goes through the serializer, so
        # errors are worded as before.
        if type(payload) is dict and payload.keys() <= {"title", "personality_mode"}:
            title = plain_title(payload.get("title"))
            mode = plain_mode(payload.get("personality_mode", PersonalityMode.HELPFUL.value))
            if title is not UNCHECKED and mode is not UNCHECKED:
                return {"title": title, "personality_mode": mode}
        return super().validate(payload)

    def run(self, payload, context):
        with _as_permanent():
            conversation = services.conversation_create(
                owner_id=_owner(context),
                title=payload["title"],
                personality_mode=payload["personality_mode"],
                job_id=context.job_id,
            )
        return {
            "conversationId": str(conversation.pk),
            "createdAt": iso(conversation.created_at),
            "title": conversation.title,
            "personalityMode": conversation.personality_mode,
        }


class UpdateConversationPayload(serializers.Serializer):
    conversation_id = serializers.UUIDField()
    title = TitleField(required=False)
    personality_mode = serializers.ChoiceField(choices=PersonalityMode.choices, required=False)

    def validate(self, attrs):
        if "title" not in attrs and "personality_mode" not in attrs:
            raise serializers.ValidationError("Give title or personality_mode.")
        return attrs


class UpdateConversationJob(_DatabaseJob):
    name = "update_conversation"
    payload_serializer = UpdateConversationPayload

    def run(self, payload, context):
        changes = {k: payload[k] for k in ("title", "personality_mode") if k in payload}
        with _as_permanent():
            conversation = services.conversation_update(
                conversation_id=payload["conversation_id"], owner_id=_owner(context), **changes
            )
        return {
            "conversationId": str(conversation.pk),
            "title": conversation.title,
            "personalityMode": conversation.personality_mode,
            "updatedAt": iso(conversation.updated_at),
        }


class ConversationIdPayload(serializers.Serializer):
    conversation_id = serializers.UUIDField()


class DeleteConversationJob(_DatabaseJob):
    name = "delete_conversation"
    payload_serializer = ConversationIdPayload

    def run(self, payload, context):
        with _as_permanent():
            tombstone = services.conversation_delete(
                conversation_id=payload["conversation_id"], owner_id=_owner(context), job_id=context.job_id
            )
        return {
            "conversationId": str(tombstone.conversation_id),
            "deleted": True,
            "deletedMessages": tombstone.message_count,
            "deletedAt": iso(tombstone.deleted_at),
        }


class SaveMessagePayload(serializers.Serializer):
    conversation_id = serializers.UUIDField()
    role = serializers.ChoiceField(choices=MessageRole.choices, required=False, default=MessageRole.USER)
    content = serializers.CharField(max_length=MAX_CONTENT_LENGTH, trim_whitespace=False)
    personality_mode = serializers.ChoiceField(
        choices=PersonalityMode.choices, required=False, default=None, allow_null=True
    )

    def validate_content(self, value):
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


class SaveMessageJob(_DatabaseJob):
    name = "save_message"
    payload_serializer = SaveMessagePayload

    def run(self, payload, context):
        with _as_permanent():
            message = services.message_save(
                conversation_id=payload["conversation_id"],
                owner_id=_owner(context),
                role=payload["role"],
                content=payload["content"],
                personality_mode=payload["personality_mode"],
                job_id=context.job_id,
            )
        return {
            "messageId": str(message.pk),
            "conversationId": str(message.conversation_id),
            "role": message.role,
            "createdAt": iso(message.created_at),
        }


class PagePayload(serializers.Serializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=selectors.MAX_PAGE_SIZE, required=False, default=selectors.DEFAULT_PAGE_SIZE
    )
    offset = serializers.IntegerField(min_value=0, required=False, default=0)


class GetConversationsJob(_DatabaseJob):
    name = "get_conversations"
    payload_serializer = PagePayload

    def run(self, payload, context):
        page = selectors.conversation_page_for_owner(
            owner_id=_owner(context), limit=payload["limit"], offset=payload["offset"]
        )
        return {"conversations": [conversation_data(c) for c in page.items], "pagination": pagination_data(page)}


class MessagePagePayload(PagePayload):
    conversation_id = serializers.UUIDField()


class GetMessagesJob(_DatabaseJob):
    name = "get_messages"
    payload_serializer = MessagePagePayload

    def run(self, payload, context):
        with _as_permanent():
            conversation = selectors.conversation_get_for_owner(
                conversation_id=payload["conversation_id"], owner_id=_owner(context)
            )
        page = selectors.message_page(conversation_id=conversation.pk, limit=payload["limit"], offset=payload["offset"])
        return {
            "conversationId": str(conversation.pk),
            "messages": [message_data(m) for m in page.items],
            "pagination": pagination_data(page),
        }


# --- chat queue


class _SettingsRetry:
    """The chat reply's retry policy, read from settings when used (CHAT_RETRY_ATTEMPTS/_BACKOFF)."""

    def __get__(self, obj, owner) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=settings.CHAT_RETRY_ATTEMPTS, backoff_base=settings.CHAT_RETRY_BACKOFF, backoff_max=60.0
        )


class ChatBotPayload(TypedSerializer):
    prompt = NonBlankCharField(max_length=2000)
    guildId = serializers.CharField(max_length=64, required=False, allow_blank=True, trim_whitespace=True)
    conversationId = serializers.UUIDField(required=False, allow_null=True)
    personalityMode = serializers.ChoiceField(choices=PersonalityMode.choices, required=False, allow_null=True)


class ChatBotInteractionJob(JobDefinition):
    """One LLM reply to one prompt; always completes with an answer (the fallback, at worst)."""

    name = "chat_bot_interaction"
    queue = QueueName.CHAT
    payload_serializer = ChatBotPayload
    timeout = 120  # > OPENAI_STREAM_MAX_SECONDS (90 by default): the service gives up first
    retry = _SettingsRetry()
    tenant_field = "guildId"  # fair-shared and quota-limited per guild, else per user

    async def run(self, payload, context):
        if context.owner_id is None:
            raise PermanentJobError("A chat reply needs an owner.", code="owner_required")
        request = ChatRequest(
            prompt=payload["prompt"],
            owner_id=context.owner_id,
            guild_id=payload.get("guildId") or "",
            conversation_id=payload.get("conversationId"),
            personality_mode=payload.get("personalityMode"),
            tenant=self.tenant_of(payload, context.owner_id),
        )
        return await chat_bot_reply(request=request, context=context)
