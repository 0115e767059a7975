"""Job types of the chat app."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from chat.bot import SYSTEM_PROMPTS, ChatRequest, chat_bot_reply
from queues.constants import QueueName
from queues.definitions import JobDefinition, PermanentJobError, RetryPolicy


class _SettingsRetry:
    """The chat reply's retry policy, read from settings when used (CHAT_RETRY_ATTEMPTS/_BACKOFF)."""

    def __get__(self, obj, owner) -> RetryPolicy:
        return RetryPolicy(max_attempts=settings.CHAT_RETRY_ATTEMPTS, backoff_base=settings.CHAT_RETRY_BACKOFF,
                           backoff_max=60.0)


class ChatBotPayload(serializers.Serializer):
    prompt = serializers.CharField(max_length=2000, trim_whitespace=True)
    guildId = serializers.CharField(max_length=64, required=False, allow_blank=True, trim_whitespace=True)
    conversationId = serializers.UUIDField(required=False, allow_null=True)
    personalityMode = serializers.ChoiceField(choices=list(SYSTEM_PROMPTS), required=False, allow_null=True)


class ChatBotInteractionJob(JobDefinition):
    """One LLM reply to one prompt; always completes with an answer (the fallback, at worst)."""

    name = "chat_bot_interaction"
    queue = QueueName.CHAT
    payload_serializer = ChatBotPayload
    timeout = 120  # > OPENAI_STREAM_MAX_SECONDS (90 by default): the service gives up first
    retry = _SettingsRetry()

    def run(self, payload, context):
        if context.owner_id is None:
            raise PermanentJobError("A chat reply needs an owner.", code="owner_required")
        request = ChatRequest(
            prompt=payload["prompt"], owner_id=context.owner_id, guild_id=payload.get("guildId") or "",
            conversation_id=payload.get("conversationId"), personality_mode=payload.get("personalityMode"),
        )
        return chat_bot_reply(request=request, context=context)
