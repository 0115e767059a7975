"""Writes to conversations and messages. Each is safe to repeat for the same job id (retries).

Ownership is checked here, not only in the API: a job naming someone else's conversation gets
ConversationNotFound, exactly like a conversation that does not exist.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_events_batched
from chat.models import (
    MAX_CONTENT_LENGTH,
    MAX_TITLE_LENGTH,
    Conversation,
    ConversationTombstone,
    Message,
    MessageRole,
    PersonalityMode,
)
from chat.selectors import ConversationNotFound, conversation_get_for_owner, conversation_tombstone_get, uuid_or_none
from slimy_site.exceptions import ValidationFailed

UNSET = object()


def _clean_title(title) -> str:
    title = (title or "").strip()
    if len(title) > MAX_TITLE_LENGTH:
        raise ValidationFailed(details={"title": [f"At most {MAX_TITLE_LENGTH} characters."]})
    return title


def _clean_mode(mode, field="personality_mode") -> str:
    if mode not in PersonalityMode.values:
        raise ValidationFailed(details={field: [f"Must be one of {', '.join(PersonalityMode.values)}."]})
    return mode


def _audit(action: str, *, owner_id, conversation_id, details: dict, actor=UNSET) -> None:
    """Record the change in the audit trail, in the writer's transaction (never raises)."""
    from audit.services import audit_event_record

    if actor is UNSET:
        actor = get_user_model().objects.filter(pk=owner_id).first()
    audit_event_record(
        action=action, resource_type="conversation", resource_id=str(conversation_id), actor=actor, details=details
    )


def _job_uuid(job_id):
    if job_id is None:
        return None
    pk = uuid_or_none(job_id)
    if pk is None:
        raise ValidationFailed(details={"job_id": ["Must be a UUID."]})
    return pk


def conversation_create(
    *, owner_id, title: str | None = None, personality_mode: str = PersonalityMode.HELPFUL, job_id
) -> Conversation:
    """Create a conversation; for a job id that already created one, return that one instead."""
    job_id = _job_uuid(job_id)
    title = _clean_title(title)
    personality_mode = _clean_mode(personality_mode)
    if job_id is not None:
        existing = Conversation.objects.filter(created_by_job_id=job_id).first()
        if existing is not None:
            return _owned_or_not_found(existing, owner_id)
    conversation = Conversation(
        owner_id=owner_id, title=title, personality_mode=personality_mode, created_by_job_id=job_id
    )
    try:
        with transaction.atomic():
            conversation.save(force_insert=True)
            _audit(
                "conversation.created",
                owner_id=owner_id,
                conversation_id=conversation.pk,
                details={"personalityMode": personality_mode, "titleLength": len(title or "")},
            )
    except IntegrityError:
        # Two deliveries of the same job raced: the other one's row is the answer.
        existing = Conversation.objects.filter(created_by_job_id=job_id).first() if job_id else None
        if existing is None:
            raise
        return _owned_or_not_found(existing, owner_id)
    return conversation


def _owned_or_not_found(conversation: Conversation, owner_id) -> Conversation:
    if conversation.owner_id != owner_id:
        raise ConversationNotFound()
    return conversation


def conversation_update(*, conversation_id, owner_id, title=UNSET, personality_mode=UNSET) -> Conversation:
    """Change the title and/or the personality mode. Setting the same values again is harmless."""
    fields: dict[str, object] = {}
    if title is not UNSET:
        fields["title"] = _clean_title(title)
    if personality_mode is not UNSET:
        fields["personality_mode"] = _clean_mode(personality_mode)
    if not fields:
        raise ValidationFailed("Nothing to change.", details={"non_field_errors": ["Give title or personality_mode."]})
    with transaction.atomic():
        conversation = conversation_get_for_owner(conversation_id=conversation_id, owner_id=owner_id)
        fields["updated_at"] = timezone.now()
        Conversation.objects.filter(pk=conversation.pk).update(**fields)
        _audit(
            "conversation.updated",
            owner_id=owner_id,
            conversation_id=conversation.pk,
            details={"fields": sorted(k for k in fields if k != "updated_at")},
        )
    return conversation_get_for_owner(conversation_id=conversation.pk, owner_id=owner_id)


def conversation_delete(*, conversation_id, owner_id, job_id=None) -> ConversationTombstone:
    """Delete a conversation and its messages, leaving a tombstone.

    Deleting an already deleted conversation of the same owner returns its tombstone, so a delete
    job retried after its first attempt committed still succeeds. Someone else's conversation (or
    one that never existed) is ConversationNotFound.
    """
    job_id = _job_uuid(job_id)
    with transaction.atomic():
        pk = uuid_or_none(conversation_id)
        conversation = Conversation.objects.select_for_update().filter(pk=pk, owner_id=owner_id).first() if pk else None
        if conversation is None:
            tombstone = conversation_tombstone_get(conversation_id=conversation_id, owner_id=owner_id)
            if tombstone is None:
                raise ConversationNotFound()
            return tombstone
        count = Message.objects.filter(conversation_id=conversation.pk).count()
        tombstone = ConversationTombstone.objects.create(
            conversation_id=conversation.pk, owner_id=owner_id, deleted_by_job_id=job_id, message_count=count
        )
        conversation.delete()
        _audit(
            "conversation.deleted",
            owner_id=owner_id,
            conversation_id=tombstone.conversation_id,
            details={"messageCount": count},
        )
    return tombstone


def message_save(
    *, conversation_id, owner_id, role: str, content: str, personality_mode: str | None = None, job_id
) -> Message:
    """Append a message to the owner's conversation and bump the conversation's `updated_at`.

    For a job id that already wrote a message, returns that message and writes nothing. The
    personality mode defaults to the conversation's; user messages are authored by the owner.
    """
    return message_save_many(
        conversation_id=conversation_id,
        owner_id=owner_id,
        messages=[(role, content, job_id)],
        personality_mode=personality_mode,
    )[0]


def message_save_many(
    *, conversation_id, owner_id, messages: list[tuple[str, str, object]], personality_mode: str | None = None
) -> list[Message]:
    """`message_save` for several (role, content, job id) messages in order, sharing its lookups: one
    query for the messages the job ids already wrote, one for the conversation, one transaction."""
    checked = []
    for role, content, job_id in messages:
        job_id = _job_uuid(job_id)
        if role not in MessageRole.values:
            raise ValidationFailed(details={"role": [f"Must be one of {', '.join(MessageRole.values)}."]})
        if not isinstance(content, str) or not content.strip():
            raise ValidationFailed(details={"content": ["This field may not be blank."]})
        if len(content) > MAX_CONTENT_LENGTH:
            raise ValidationFailed(details={"content": [f"At most {MAX_CONTENT_LENGTH} characters."]})
        checked.append((role, content, job_id))
    if personality_mode is not None:
        _clean_mode(personality_mode)

    existing = _messages_of_jobs([job_id for *_, job_id in checked], owner_id)
    if all(job_id is not None and job_id in existing for *_, job_id in checked):
        return [existing[job_id] for *_, job_id in checked]
    conversation = conversation_get_for_owner(conversation_id=conversation_id, owner_id=owner_id, counted=False)
    new = _new_messages(conversation, owner_id, checked, existing, personality_mode)
    try:
        with transaction.atomic():
            for message in new:  # one at a time: each gets its own, later, created_at
                message.save(force_insert=True)
            Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
            actor = get_user_model().objects.filter(pk=owner_id).first()
            with audit_events_batched():  # one statement for the messages' events
                for message in new:
                    _audit(
                        "message.saved",
                        owner_id=owner_id,
                        conversation_id=conversation.pk,
                        actor=actor,
                        details={
                            "messageId": str(message.pk),
                            "role": message.role,
                            "contentLength": len(message.content),
                        },
                    )
    except IntegrityError:
        # Two deliveries of the same job raced: the other one's rows are the answer.
        existing = _messages_of_jobs([job_id for *_, job_id in checked], owner_id)
        if not all(job_id is not None and job_id in existing for *_, job_id in checked):
            raise
        return [existing[job_id] for *_, job_id in checked]
    saved = iter(new)
    return [existing[job_id] if job_id is not None and job_id in existing else next(saved) for *_, job_id in checked]


def message_save_together(
    saves: list[tuple[object, object, list[tuple[str, str, object]], str | None]], *, actors: dict
) -> list[bool]:
    """`message_save_many` for several distinct conversations at once, in the caller's transaction:
    `saves` are (conversation id, owner id, messages, personality mode); `actors` maps owner ids to their
    users (or lacks them). Per save: True when its messages are saved (now or by an earlier delivery),
    False when its conversation is gone or not the owner's (where `message_save_many` raises
    ConversationNotFound). The same lookups for all: one query for the messages the job ids already
    wrote, one for the conversations, one insert per position (each message of a save gets a later
    `created_at` than the one before it), one update, one audit statement (the caller's batch).

    A validation error or a duplicate delivery racing this one (IntegrityError) raises for all: the caller
    then saves each with `message_save_many`, which answers them one by one.
    """
    checked = []
    for conversation_id, owner_id, messages, personality_mode in saves:
        rows = []
        for role, content, job_id in messages:
            if role not in MessageRole.values:
                raise ValidationFailed(details={"role": [f"Must be one of {', '.join(MessageRole.values)}."]})
            if not isinstance(content, str) or not content.strip() or len(content) > MAX_CONTENT_LENGTH:
                raise ValidationFailed(details={"content": ["Blank or too long."]})
            rows.append((role, content, _job_uuid(job_id)))
        if personality_mode is not None:
            _clean_mode(personality_mode)
        checked.append((uuid_or_none(conversation_id), owner_id, rows, personality_mode))

    wanted = [job_id for *_, rows, _mode in checked for *_, job_id in rows if job_id is not None]
    existing = {m.job_id: m for m in Message.objects.select_related("conversation").filter(job_id__in=wanted)}
    conversation_ids = [pk for pk, *_ in checked if pk is not None]
    conversations = {c.pk: c for c in Conversation.objects.filter(pk__in=conversation_ids)}
    answers: list[bool] = []
    waves: list[list[Message]] = []  # the n-th new message of every save
    written: list[tuple[int, Message]] = []  # (owner id, message), for the audit events
    touched = []
    for pk, owner_id, rows, personality_mode in checked:
        found = [existing.get(job_id) for *_, job_id in rows if job_id is not None]
        if any(m is not None and m.conversation.owner_id != owner_id for m in found):
            answers.append(False)  # someone else's: not found
            continue
        if all(job_id is not None and job_id in existing for *_, job_id in rows):
            answers.append(True)
            continue
        conversation = conversations.get(pk) if pk is not None else None
        if conversation is None or owner_id is None or conversation.owner_id != owner_id:
            answers.append(False)
            continue
        new = _new_messages(conversation, owner_id, rows, existing, personality_mode)
        for position, message in enumerate(new):
            if position == len(waves):
                waves.append([])
            waves[position].append(message)
            written.append((owner_id, message))
        touched.append(conversation.pk)
        answers.append(True)
    if touched:
        with transaction.atomic():
            for wave in waves:  # one statement per position: a later one gets a later created_at
                Message.objects.bulk_create(wave)
            Conversation.objects.filter(pk__in=touched).update(updated_at=timezone.now())
            with audit_events_batched():
                for owner_id, message in written:
                    _audit(
                        "message.saved",
                        owner_id=owner_id,
                        conversation_id=message.conversation_id,
                        actor=actors.get(owner_id),
                        details={
                            "messageId": str(message.pk),
                            "role": message.role,
                            "contentLength": len(message.content),
                        },
                    )
    return answers


def _messages_of_jobs(job_ids, owner_id) -> dict:
    """{job id: message} of the messages these job ids wrote; someone else's is ConversationNotFound."""
    wanted = [job_id for job_id in job_ids if job_id is not None]
    if not wanted:
        return {}
    found = {}
    for message in Message.objects.select_related("conversation").filter(job_id__in=wanted):
        if message.conversation.owner_id != owner_id:
            raise ConversationNotFound()
        found[message.job_id] = message
    return found


def _new_messages(conversation, owner_id, rows, existing, personality_mode) -> list[Message]:
    """The Message objects of (role, content, job id) rows whose job has not written its message yet."""
    return [
        Message(
            conversation_id=conversation.pk,
            author_id=owner_id if role == MessageRole.USER else None,
            role=role,
            content=content,
            personality_mode=personality_mode or conversation.personality_mode,
            job_id=job_id,
        )
        for role, content, job_id in rows
        if job_id is None or job_id not in existing
    ]
