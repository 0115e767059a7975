"""The JSON shapes of conversations and messages, shared by job results and API responses."""

from rest_framework import serializers

from chat.models import MessageRole, PersonalityMode


class ConversationOutputSerializer(serializers.Serializer):
    conversationId = serializers.UUIDField(source="id")
    title = serializers.CharField()
    personalityMode = serializers.ChoiceField(source="personality_mode", choices=PersonalityMode.choices)
    messageCount = serializers.IntegerField(source="message_count")
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    class Meta:
        ref_name = "Conversation"


class MessageOutputSerializer(serializers.Serializer):
    messageId = serializers.UUIDField(source="id")
    conversationId = serializers.UUIDField(source="conversation_id")
    role = serializers.ChoiceField(choices=MessageRole.choices)
    content = serializers.CharField()
    personalityMode = serializers.ChoiceField(source="personality_mode", choices=PersonalityMode.choices)
    authorId = serializers.IntegerField(source="author_id", allow_null=True)
    jobId = serializers.UUIDField(source="job_id", allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at")

    class Meta:
        ref_name = "Message"


class PaginationSerializer(serializers.Serializer):
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    total = serializers.IntegerField()
    hasMore = serializers.BooleanField(source="has_more")

    class Meta:
        ref_name = "Pagination"


def pagination_data(page) -> dict:
    return dict(PaginationSerializer(page).data)


def conversation_data(conversation) -> dict:
    return dict(ConversationOutputSerializer(conversation).data)


def message_data(message) -> dict:
    return dict(MessageOutputSerializer(message).data)


_DATETIME = serializers.DateTimeField()


def iso(value) -> str:
    """A datetime as the API writes it everywhere (DRF's ISO 8601, UTC as `Z`)."""
    return _DATETIME.to_representation(value)
