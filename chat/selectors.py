"""Reads of conversations and messages. Every read is scoped to the owner; a foreign id is 'not found'."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Generic, TypeVar

from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce

from chat.models import Conversation, ConversationTombstone, Message
from queues.constants import QueueName
from queues.models import JobRecord
from queues.selectors import JobNotFound
from slimy_site.exceptions import NotFound

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Deep offsets make PostgreSQL walk every skipped row, and no account holds this many; the bound also
# keeps a tampered offset (2**63) from reaching the database, where it overflows (a 500).
MAX_OFFSET = 1_000_000

T = TypeVar("T")


class ConversationNotFound(NotFound):
    code = "conversation_not_found"
    message = "Conversation not found."


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @property
    def has_more(self) -> bool:
        return self.offset + len(self.items) < self.total


def uuid_or_none(value) -> uuid.UUID | None:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


def _clamp(limit: int, offset: int) -> tuple[int, int]:
    return max(1, min(int(limit), MAX_PAGE_SIZE)), max(0, min(int(offset), MAX_OFFSET))


def conversation_message_count():
    """An annotation: the number of messages of each conversation."""
    # A correlated count per row (an index-only scan on msg_conversation_created), evaluated only
    # for the rows the LIMIT keeps, unlike JOIN + GROUP BY, which aggregates all of an owner's messages.
    counts = (
        Message.objects.filter(conversation=OuterRef("pk"))
        .order_by()
        .values("conversation")
        .annotate(n=Count("*"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


def conversation_list_for_owner(*, owner_id) -> QuerySet[Conversation]:
    """The owner's conversations, most recently active first, each with `message_count`."""
    return (
        Conversation.objects.filter(owner_id=owner_id)
        .annotate(message_count=conversation_message_count())
        .order_by("-updated_at", "-id")
    )


def conversation_page_for_owner(*, owner_id, limit: int = DEFAULT_PAGE_SIZE, offset: int = 0) -> Page[Conversation]:
    limit, offset = _clamp(limit, offset)
    items = list(conversation_list_for_owner(owner_id=owner_id)[offset : offset + limit])
    total = Conversation.objects.filter(owner_id=owner_id).count()
    return Page(items=items, total=total, limit=limit, offset=offset)


def conversation_get_for_owner(*, conversation_id, owner_id, counted: bool = True) -> Conversation:
    """The conversation if `owner_id` owns it, with `message_count` (unless not `counted`); otherwise
    ConversationNotFound."""
    pk = uuid_or_none(conversation_id)
    if pk is None or owner_id is None:
        raise ConversationNotFound()
    if counted:
        conversation = conversation_list_for_owner(owner_id=owner_id).filter(pk=pk).first()
    else:
        conversation = Conversation.objects.filter(owner_id=owner_id, pk=pk).first()
    if conversation is None:
        raise ConversationNotFound()
    return conversation


def conversation_tombstone_get(*, conversation_id, owner_id) -> ConversationTombstone | None:
    """The record of the owner's deleted conversation, if it was deleted."""
    pk = uuid_or_none(conversation_id)
    if pk is None:
        return None
    return ConversationTombstone.objects.filter(conversation_id=pk, owner_id=owner_id).first()


def message_page(*, conversation_id, limit: int = DEFAULT_PAGE_SIZE, offset: int = 0) -> Page[Message]:
    """A conversation's messages in order (oldest first). Check ownership before calling."""
    limit, offset = _clamp(limit, offset)
    qs = Message.objects.filter(conversation_id=conversation_id)
    items = list(qs.order_by("created_at", "id")[offset : offset + limit])
    total = qs.count()
    return Page(items=items, total=total, limit=limit, offset=offset)


def message_list_recent(*, conversation_id, limit: int) -> list[Message]:
    """The last `limit` messages of a conversation, oldest first (e.g. the context of an LLM prompt)."""
    if limit <= 0:
        return []
    newest = Message.objects.filter(conversation_id=conversation_id).order_by("-created_at", "-id")[:limit]
    return list(reversed(list(newest)))


def message_list_recent_many(*, conversation_ids, limit: int) -> dict:
    """`message_list_recent` of several conversations in one query: {conversation id: messages, oldest first}
    (a conversation without messages is absent). Each conversation's newest `limit` rows come from its
    (conversation, created_at, id) index, as for one."""
    ids = [pk for pk in (uuid_or_none(c) for c in conversation_ids) if pk is not None]
    if limit <= 0 or not ids:
        return {}
    table = Message._meta.db_table
    rows = Message.objects.raw(
        "SELECT m.* FROM unnest(%s::uuid[]) AS c(id) CROSS JOIN LATERAL ("
        f" SELECT * FROM {table} WHERE conversation_id = c.id ORDER BY created_at DESC, id DESC LIMIT %s) AS m",
        [ids, int(limit)],
    )
    found: dict = {}
    for message in rows:
        found.setdefault(message.conversation_id, []).append(message)
    for messages in found.values():
        messages.sort(key=lambda m: (m.created_at, m.id))
    return found


def db_job_get_for_owner(*, job_id, owner_id) -> JobRecord:
    """A `database`-queue job of this owner; anyone else's (or another queue's) job is JobNotFound."""
    pk = uuid_or_none(job_id)
    if pk is None or owner_id is None:
        raise JobNotFound()
    job = JobRecord.objects.filter(pk=pk, owner_id=owner_id, queue=QueueName.DATABASE).first()
    if job is None:
        raise JobNotFound()
    return job
