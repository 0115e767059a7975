"""Chat API (/api/chat/). Conversation writes are `database` jobs (202 + a job to poll); reads are direct.

Someone else's conversation or job is a 404 (`conversation_not_found` / `job_not_found`), never a 403.
"""

from __future__ import annotations

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import selectors
from chat.jobs import UNCHECKED, TitleField, plain_mode, plain_title
from chat.models import MAX_CONTENT_LENGTH, MessageRole, PersonalityMode
from chat.serializers import (
    ConversationOutputSerializer,
    MessageOutputSerializer,
    PaginationSerializer,
    conversation_data,
    iso,
    message_data,
    pagination_data,
)
from queues.api.jobs import JobErrorSerializer
from queues.api.quick_submit import QuickSubmission, QuickSubmitMixin
from queues.api.submit import JobAcceptedSerializer, accept_job, submit_responses
from queues.constants import JobStatus
from queues.selectors import job_error_for_viewer
from slimy_site.roles import IsMember
from slimy_site.schema import error_responses
from slimy_site.serializers import (
    NON_BLANK_PATTERN,
    NonBlankCharField,
    StrictQuerySerializer,
    StrictSerializer,
    validate_input,
)

# --- Shared pieces.


class PageQuerySerializer(StrictQuerySerializer):
    limit = serializers.IntegerField(
        min_value=1, max_value=selectors.MAX_PAGE_SIZE, default=selectors.DEFAULT_PAGE_SIZE
    )
    offset = serializers.IntegerField(min_value=0, max_value=selectors.MAX_OFFSET, default=0)

    class Meta:
        ref_name = "ChatPageQuery"


class ConversationJobAcceptedSerializer(JobAcceptedSerializer):
    conversationId = serializers.UUIDField(help_text="The conversation the job acts on.")

    class Meta:
        ref_name = "ConversationJobAccepted"


ACCEPTED = submit_responses(JobAcceptedSerializer)
ACCEPTED_FOR_CONVERSATION = submit_responses(ConversationJobAcceptedSerializer, "conversation_not_found")
CONVERSATION_ID = OpenApiParameter("conversation_id", OpenApiTypes.UUID, OpenApiParameter.PATH)


# --- Conversations and messages.


class ConversationListCreateApi(QuickSubmitMixin, APIView):
    permission_classes = [IsMember]
    submit_methods = ("POST",)  # rate-limited in accept_job's one Redis round trip

    class InputSerializer(StrictSerializer):
        title = TitleField(required=False)
        personalityMode = serializers.ChoiceField(choices=PersonalityMode.choices, required=False)

        class Meta:
            ref_name = "ConversationCreateInput"

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        conversations = ConversationOutputSerializer(many=True)
        pagination = PaginationSerializer()

        class Meta:
            ref_name = "ConversationList"

    @extend_schema(
        operation_id="chat_conversations_list",
        tags=["chat"],
        parameters=[PageQuerySerializer],
        responses={200: OutputSerializer, **error_responses("validation_error")},
    )
    def get(self, request):
        query = validate_input(PageQuerySerializer, request.query_params.dict())
        page = selectors.conversation_page_for_owner(owner_id=request.user.pk, **query)
        return Response(
            {
                "ok": True,
                "conversations": [conversation_data(c) for c in page.items],
                "pagination": pagination_data(page),
            }
        )

    @extend_schema(operation_id="chat_conversations_create", tags=["chat"], request=InputSerializer, responses=ACCEPTED)
    def post(self, request):
        data = _create_input_plain(request.data)
        if data is None:
            data = validate_input(self.InputSerializer, request.data)
        return accept_job(request, job_type="create_conversation", payload=_create_payload(data))

    def quick_submission(self, request, data):
        clean = _create_input_plain(data)
        return None if clean is None else QuickSubmission("create_conversation", _create_payload(clean))


def _create_payload(data: dict) -> dict:
    payload = {}
    if data.get("title") is not None:
        payload["title"] = data["title"]
    if "personalityMode" in data:
        payload["personality_mode"] = data["personalityMode"]
    return payload


def _with_plain_mode(data: dict, clean: dict) -> dict | None:
    """`clean` with the body's personalityMode when plainly valid (None: the serializer words the error)."""
    if "personalityMode" in data:
        mode = plain_mode(data["personalityMode"])
        if mode is UNCHECKED:
            return None
        clean["personalityMode"] = mode
    return clean


def _create_input_plain(data) -> dict | None:
    """What ConversationListCreateApi.InputSerializer makes of a plainly valid body, checked in plain code
    (a serializer per submission cost a tenth of its CPU); None when the body needs the serializer (which
    then words the errors)."""
    if type(data) is not dict or not data.keys() <= {"title", "personalityMode"}:
        return None
    clean = {}
    if "title" in data:
        title = plain_title(data["title"])
        if title is UNCHECKED:
            return None
        clean["title"] = title
    return _with_plain_mode(data, clean)


class ConversationDetailApi(APIView):
    permission_classes = [IsMember]
    submit_methods = ("PATCH", "DELETE")

    class UpdateInputSerializer(StrictSerializer):
        title = TitleField(required=False)
        personalityMode = serializers.ChoiceField(choices=PersonalityMode.choices, required=False)

        class Meta:
            ref_name = "ConversationUpdateInput"

        def validate(self, attrs):
            if not attrs:
                raise serializers.ValidationError("Give title and/or personalityMode.")
            return attrs

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        conversation = ConversationOutputSerializer()
        messages = MessageOutputSerializer(many=True)
        pagination = PaginationSerializer(help_text="Of the messages, oldest first.")

        class Meta:
            ref_name = "ConversationDetail"

    @extend_schema(
        operation_id="chat_conversation_retrieve",
        tags=["chat"],
        parameters=[CONVERSATION_ID, PageQuerySerializer],
        responses={200: OutputSerializer, **error_responses("validation_error", "conversation_not_found")},
    )
    def get(self, request, conversation_id):
        conversation = selectors.conversation_get_for_owner(conversation_id=conversation_id, owner_id=request.user.pk)
        query = validate_input(PageQuerySerializer, request.query_params.dict())
        page = selectors.message_page(conversation_id=conversation.pk, **query)
        return Response(
            {
                "ok": True,
                "conversation": conversation_data(conversation),
                "messages": [message_data(m) for m in page.items],
                "pagination": pagination_data(page),
            }
        )

    @extend_schema(
        operation_id="chat_conversation_update",
        tags=["chat"],
        parameters=[CONVERSATION_ID],
        request=UpdateInputSerializer,
        responses=ACCEPTED_FOR_CONVERSATION,
    )
    def patch(self, request, conversation_id):
        conversation = selectors.conversation_get_for_owner(conversation_id=conversation_id, owner_id=request.user.pk)
        data = validate_input(self.UpdateInputSerializer, request.data)
        payload = {"conversation_id": str(conversation.pk)}
        if "title" in data:
            payload["title"] = data["title"] or ""
        if "personalityMode" in data:
            payload["personality_mode"] = data["personalityMode"]
        return accept_job(
            request,
            job_type="update_conversation",
            payload=payload,
            extra_body={"conversationId": str(conversation.pk)},
        )

    @extend_schema(
        operation_id="chat_conversation_delete",
        tags=["chat"],
        parameters=[CONVERSATION_ID],
        request=None,
        responses=ACCEPTED_FOR_CONVERSATION,
    )
    def delete(self, request, conversation_id):
        # An already deleted conversation of this user is accepted too: the job answers with its
        # tombstone, so a client retrying its DELETE (with or without Idempotency-Key) gets a success.
        tombstone = selectors.conversation_tombstone_get(conversation_id=conversation_id, owner_id=request.user.pk)
        pk = (
            tombstone.conversation_id
            if tombstone
            else selectors.conversation_get_for_owner(conversation_id=conversation_id, owner_id=request.user.pk).pk
        )
        return accept_job(
            request,
            job_type="delete_conversation",
            payload={"conversation_id": str(pk)},
            extra_body={"conversationId": str(pk)},
        )


class MessageCreateApi(QuickSubmitMixin, APIView):
    permission_classes = [IsMember]
    submit_methods = ("POST",)

    class InputSerializer(StrictSerializer):
        conversationId = serializers.UUIDField()
        role = serializers.ChoiceField(choices=MessageRole.choices, required=False, default=MessageRole.USER)
        content = NonBlankCharField(max_length=MAX_CONTENT_LENGTH, trim_whitespace=False)
        personalityMode = serializers.ChoiceField(
            choices=PersonalityMode.choices, required=False, help_text="Defaults to the conversation's mode."
        )

        class Meta:
            ref_name = "MessageCreateInput"

    @extend_schema(
        operation_id="chat_messages_create", tags=["chat"], request=InputSerializer, responses=ACCEPTED_FOR_CONVERSATION
    )
    def post(self, request):
        data = validate_input(self.InputSerializer, request.data)
        conversation = selectors.conversation_get_for_owner(
            conversation_id=data["conversationId"], owner_id=request.user.pk, counted=False
        )
        return accept_job(request, **_message_submission(conversation, data)._asdict())

    def quick_submission(self, request, data):
        clean = _message_input_plain(data)
        if clean is None:
            return None
        try:
            conversation = selectors.conversation_get_for_owner(
                conversation_id=clean["conversationId"], owner_id=request.user.pk, counted=False
            )
        except selectors.ConversationNotFound:
            return None  # DRF's path answers the 404 (and charges the request's write scope)
        return _message_submission(conversation, clean)


def _message_submission(conversation, data: dict) -> QuickSubmission:
    payload = {"conversation_id": str(conversation.pk), "role": data["role"], "content": data["content"]}
    if "personalityMode" in data:
        payload["personality_mode"] = data["personalityMode"]
    return QuickSubmission("save_message", payload, {"conversationId": str(conversation.pk)})


_MESSAGE_FIELDS = frozenset({"conversationId", "role", "content", "personalityMode"})
_NON_BLANK = re.compile(NON_BLANK_PATTERN)


def _message_input_plain(data) -> dict | None:
    """What MessageCreateApi.InputSerializer makes of a plainly valid body, checked in plain code; None when
    the body needs the serializer (which then words the errors)."""
    if type(data) is not dict or not data.keys() <= _MESSAGE_FIELDS:
        return None
    conversation_id, role, content = data.get("conversationId"), data.get("role", "user"), data.get("content")
    if type(conversation_id) is not str or selectors.uuid_or_none(conversation_id) is None:
        return None
    if type(role) is not str or role not in MessageRole.values:
        return None
    if type(content) is not str or len(content) > MAX_CONTENT_LENGTH or not _NON_BLANK.search(content):
        return None
    clean = {"conversationId": conversation_id, "role": role, "content": content}
    return _with_plain_mode(data, clean)


# --- Status of database jobs.


class DbJobDetailApi(APIView):
    permission_classes = [IsMember]

    class OutputSerializer(serializers.Serializer):
        ok = serializers.BooleanField()
        status = serializers.ChoiceField(choices=JobStatus.choices)
        jobId = serializers.UUIDField()
        jobType = serializers.CharField()
        createdAt = serializers.DateTimeField()
        result = serializers.JSONField(required=False, help_text="When completed.")
        completedAt = serializers.DateTimeField(required=False)
        error = JobErrorSerializer(required=False, help_text="When failed; untyped errors are hidden from owners.")
        failedAt = serializers.DateTimeField(required=False)
        cancelledAt = serializers.DateTimeField(required=False)

        class Meta:
            ref_name = "DbJobStatus"

    @extend_schema(
        operation_id="chat_db_job_retrieve",
        tags=["chat"],
        parameters=[OpenApiParameter("job_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses={200: OutputSerializer, **error_responses("job_not_found")},
    )
    def get(self, request, job_id):
        job = selectors.db_job_get_for_owner(job_id=job_id, owner_id=request.user.pk)
        body = {
            "ok": True,
            "status": job.status,
            "jobId": str(job.pk),
            "jobType": job.job_type,
            "createdAt": iso(job.created_at),
        }
        if job.status == JobStatus.COMPLETED:
            body.update(result=job.result, completedAt=iso(job.finished_at))
        elif job.status == JobStatus.FAILED:
            body.update(error=job_error_for_viewer(job=job, viewer=request.user), failedAt=iso(job.finished_at))
        elif job.status == JobStatus.CANCELLED:
            body.update(cancelledAt=iso(job.finished_at))
        return Response(body)
