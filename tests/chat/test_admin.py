import uuid

import pytest
from django.urls import reverse

from chat.models import ConversationTombstone
from tests.factories.chat import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser(username="root", password="pw-root-123", email="r@x.test")
    client.force_login(admin)
    return client


def test_conversation_list_shows_owner_title_mode_and_message_count(staff_client, user):
    conversation = ConversationFactory(owner=user, title="Holiday plans", personality_mode="creative")
    MessageFactory.create_batch(3, conversation=conversation)
    response = staff_client.get(reverse("admin:chat_conversation_changelist"))
    assert response.status_code == 200
    row = response.context["cl"].result_list.get(pk=conversation.pk)
    assert row.message_count == 3
    html = response.content.decode()
    assert "Holiday plans" in html and "alice" in html and "creative" in html


def test_conversation_search_by_title_and_owner(staff_client, user, other_user):
    ConversationFactory(owner=user, title="Holiday plans")
    ConversationFactory(owner=other_user, title="Tax return")
    url = reverse("admin:chat_conversation_changelist")
    by_title = staff_client.get(url, {"q": "holiday"}).context["cl"].result_list
    assert [c.title for c in by_title] == ["Holiday plans"]
    by_owner = staff_client.get(url, {"q": "bob"}).context["cl"].result_list
    assert [c.title for c in by_owner] == ["Tax return"]


def test_conversation_page_shows_messages_read_only_with_links_to_their_jobs(staff_client, user):
    conversation = ConversationFactory(owner=user)
    job_id = uuid.uuid4()
    MessageFactory(conversation=conversation, content="written by a job", job_id=job_id)
    MessageFactory(conversation=conversation, content="written without a job")
    response = staff_client.get(reverse("admin:chat_conversation_change", args=[conversation.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert "written by a job" in html and "written without a job" in html
    assert f'href="/admin/queues/jobrecord/{job_id}/change/"' in html
    formset = response.context["inline_admin_formsets"][0]
    assert formset.has_add_permission is False and formset.has_change_permission is False
    assert 'name="messages-0-content"' not in html  # read-only: no input fields for messages


def test_messages_cannot_be_added_or_changed_in_the_admin(staff_client, user):
    message = MessageFactory(conversation=ConversationFactory(owner=user), content="original")
    assert staff_client.get(reverse("admin:chat_message_add")).status_code == 403
    url = reverse("admin:chat_message_change", args=[message.pk])
    assert staff_client.get(url).status_code == 200
    staff_client.post(url, {"content": "changed"})
    message.refresh_from_db()
    assert message.content == "original"


def test_tombstones_are_listed(staff_client, user):
    ConversationTombstone.objects.create(conversation_id=uuid.uuid4(), owner=user, message_count=4)
    response = staff_client.get(reverse("admin:chat_conversationtombstone_changelist"))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 1
