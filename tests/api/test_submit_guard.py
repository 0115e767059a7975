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


def _member_client(make_api_client, django_user_model, name):
    member = django_user_model.objects.create_user(username=name, password=f"pw-{name}-1")
    member.groups.add(Group.objects.get_or_create(name="member")[0])
    return make_api_client(member)


def test_write_limit_of_a_submitting_view_is_charged_in_the_guards_round_trip(
    make_api_client, django_user_model, settings, redis_conn
):
    """The DRF throttle leaves a submitting method's scope to the guard's script: no call of its own."""
    from queues.models import JobRecord

    settings.API_RATE_LIMITS = {"submit": "100/min", "write": "2/min", "read": "100/min"}
    client = _member_client(make_api_client, django_user_model, "m-write")
    redis_conn.config_resetstat()
    codes = [client.post("/api/chat/conversations", {"title": f"t{i}"}, format="json").status_code for i in range(3)]
    assert codes == [202, 202, 429]
    refused = client.post("/api/chat/conversations", {"title": "x"}, format="json").json()
    assert refused["error"] == "rate_limited" and refused["details"]["scope"] == "write"
    assert JobRecord.objects.count() == 2
    stats = redis_conn.info("commandstats")
    # One script per request checks write + submit and the backlog (no ping, no EVAL of the throttle's own),
    # one more per accepted request pushes it: 4 + 2 (a NOSCRIPT answer, before a script is loaded, fails).
    # One script per request checks write + submit and the backlog: no EVAL of the throttle's own, no
    # command of its own for the backlog (a NOSCRIPT answer, before the script is loaded, is a failed call).
    assert "cmdstat_eval" not in stats
    assert stats["cmdstat_evalsha"]["calls"] - stats["cmdstat_evalsha"].get("failed_calls", 0) == 4


def test_invalid_submissions_still_count_against_the_write_limit(make_api_client, django_user_model, settings):
    settings.API_RATE_LIMITS = {"submit": "100/min", "write": "2/min", "read": "100/min"}
    client = _member_client(make_api_client, django_user_model, "m-invalid")
    answers = [client.post("/api/chat/conversations", {"title": 0}, format="json") for _ in range(3)]
    assert [a.status_code for a in answers] == [400, 400, 429]
    assert answers[2].json()["details"]["scope"] == "write" and answers[2]["Retry-After"]
    assert client.get("/api/chat/conversations").status_code == 200  # reads have their own scope
