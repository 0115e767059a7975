import factory
from django.contrib.auth import get_user_model
from factory.django import DjangoModelFactory

from chat.models import Conversation, Message, MessageRole, PersonalityMode


class ChatUserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"chat-user-{n}")


class ConversationFactory(DjangoModelFactory):
    class Meta:
        model = Conversation

    owner = factory.SubFactory(ChatUserFactory)
    title = factory.Sequence(lambda n: f"Conversation {n}")
    personality_mode = PersonalityMode.HELPFUL


class MessageFactory(DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = MessageRole.USER
    author = factory.LazyAttribute(lambda m: m.conversation.owner if m.role == MessageRole.USER else None)
    content = factory.Sequence(lambda n: f"message {n}")
    personality_mode = factory.LazyAttribute(lambda m: m.conversation.personality_mode)
