"""Conversations and their messages. Every user write reaches these tables through a `database` job."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models.functions import Length
from django.db.models.lookups import LessThanOrEqual

MAX_TITLE_LENGTH = 200
MAX_CONTENT_LENGTH = 10_000


class PersonalityMode(models.TextChoices):
    HELPFUL = "helpful", "helpful"
    CREATIVE = "creative", "creative"
    PROFESSIONAL = "professional", "professional"
    CASUAL = "casual", "casual"


class MessageRole(models.TextChoices):
    USER = "user", "user"
    ASSISTANT = "assistant", "assistant"
    SYSTEM = "system", "system"


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Not indexed alone: conv_owner_updated leads with owner.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations", db_index=False
    )
    title = models.CharField(max_length=MAX_TITLE_LENGTH, blank=True, default="")
    personality_mode = models.CharField(max_length=16, choices=PersonalityMode.choices, default=PersonalityMode.HELPFUL)
    created_at = models.DateTimeField(auto_now_add=True)
    # Bumped by every change and every new message: "newest first" means most recently active.
    updated_at = models.DateTimeField(auto_now=True)
    # The job that created it: a retried create job finds its conversation instead of making a second.
    created_by_job_id = models.UUIDField(null=True, blank=True, unique=True, editable=False)

    class Meta:
        ordering = ["-updated_at", "-id"]
        indexes = [
            # "My conversations, newest first": an index range scan, stopped by LIMIT.
            models.Index(fields=["owner", "-updated_at", "-id"], name="conv_owner_updated"),
        ]

    def __str__(self):
        return self.title or f"conversation {self.id}"


class Message(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Not indexed alone: msg_conversation_created leads with conversation.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="chat_messages"
    )
    role = models.CharField(max_length=16, choices=MessageRole.choices)
    content = models.TextField()
    personality_mode = models.CharField(max_length=16, choices=PersonalityMode.choices, default=PersonalityMode.HELPFUL)
    created_at = models.DateTimeField(auto_now_add=True)
    # The job that wrote it; unique, so a retried job returns its message instead of writing it twice.
    job_id = models.UUIDField(null=True, blank=True, unique=True, editable=False)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # "Messages of a conversation in order" and the per-conversation count (index-only scan).
            models.Index(fields=["conversation", "created_at", "id"], name="msg_conversation_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("content"), MAX_CONTENT_LENGTH), name="msg_content_max_length"
            ),
            models.CheckConstraint(condition=models.Q(role__in=MessageRole.values), name="msg_role_valid"),
        ]

    def __str__(self):
        return f"{self.role} message {self.id}"


class ConversationTombstone(models.Model):
    """Remembers a deleted conversation, so a retried delete job succeeds instead of failing as not found.

    Only the id, the owner and the deleting job are kept; the content is gone.
    """

    conversation_id = models.UUIDField(primary_key=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    deleted_by_job_id = models.UUIDField(null=True, blank=True)
    message_count = models.PositiveIntegerField(default=0)
    deleted_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"deleted conversation {self.conversation_id}"


class TenantQuota(models.Model):
    """A tenant's daily LLM token allowance (UTC days), overriding CHAT_TENANT_DAILY_TOKENS.

    The tenant is a JobRecord tenant: a guild id, or `user:<id>`. Usage is counted in Redis per day
    (chat.quotas); this row is only the limit, so staff edit it in the admin and it takes effect at once.
    """

    tenant = models.CharField(max_length=100, unique=True, help_text="Guild id, or user:<id> for direct chats.")
    daily_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Tokens per UTC day; empty = unlimited, 0 = no LLM replies."
    )
    note = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant"]

    def __str__(self):
        limit = "unlimited" if self.daily_tokens is None else f"{self.daily_tokens} tokens/day"
        return f"{self.tenant}: {limit}"
