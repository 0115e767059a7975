"""create_conversation's input and payload are checked in plain code when plainly valid: the result is
what the serializers make of the same data, and anything else still gets the serializers' errors."""

import pytest
from rest_framework import serializers

from chat.apis import ConversationListCreateApi, _create_input_plain
from chat.jobs import CreateConversationJob, CreateConversationPayload
from chat.models import MAX_TITLE_LENGTH
from queues.definitions import JobDefinition
from slimy_site.serializers import validate_input

VALID = [
    {},
    {"title": "bench"},
    {"title": "  padded  "},
    {"title": ""},
    {"title": "   "},
    {"title": None},
    {"title": "x" * MAX_TITLE_LENGTH},
    {"title": " " + "x" * MAX_TITLE_LENGTH + " "},
    {"personalityMode": "helpful"},
    {"title": "t", "personalityMode": "helpful"},
]
NEEDS_THE_SERIALIZER = [
    {"title": 0},
    {"title": True},
    {"title": ["x"]},
    {"title": "x" * (MAX_TITLE_LENGTH + 1)},
    {"personalityMode": "nope"},
    {"personalityMode": 1},
    {"personalityMode": None},
    {"other": 1},
    {"title": "t", "jobId": "x"},
    [],
    None,
    "text",
]


@pytest.mark.parametrize("data", VALID)
def test_plainly_valid_input_gives_what_the_serializer_gives(data):
    assert _create_input_plain(data) == dict(validate_input(ConversationListCreateApi.InputSerializer, data))


@pytest.mark.parametrize("data", NEEDS_THE_SERIALIZER)
def test_anything_else_is_left_to_the_serializer(data):
    assert _create_input_plain(data) is None


def _by_serializer(payload):
    return JobDefinition.validate.__func__(CreateConversationJob, payload)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"title": "t"},
        {"title": None},
        {"title": " t "},
        {"title": ""},
        {"personality_mode": "helpful"},
        {"title": "t", "personality_mode": "helpful"},
    ],
)
def test_plainly_valid_payload_gives_what_the_payload_serializer_gives(payload):
    assert CreateConversationJob.payload_serializer is CreateConversationPayload
    assert CreateConversationJob.validate(payload) == _by_serializer(payload)


@pytest.mark.parametrize(
    "payload",
    [{"title": "x" * (MAX_TITLE_LENGTH + 1)}, {"personality_mode": "nope"}, {"other": 1}, [], {"title": 5}],
)
def test_other_payloads_get_the_serializers_answer(payload):
    try:
        expected = _by_serializer(payload)
    except serializers.ValidationError as exc:
        with pytest.raises(serializers.ValidationError) as got:
            CreateConversationJob.validate(payload)
        assert got.value.detail == exc.detail
    else:
        assert CreateConversationJob.validate(payload) == expected
