"""Tampered paging and filter values are 400 validation_error, never a 500 (issue 15, item 3)."""

import base64
import datetime as dt

import pytest
from django.contrib.auth.models import Group

from queues.services import job_enqueue
from tests.factories.api import UserFactory
from tests.factories.audit import EventFactory, write_events
from tests.factories.chat import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

TOO_BIG = str(2**63)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def audit_staff(django_user_model):
    return django_user_model.objects.create_user(username="paging-staff", is_staff=True)


def _assert_400(response, field):
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "validation_error" and field in body["details"], body


@pytest.mark.parametrize("cursor", [_b64("p=garbage"), _b64("o=1&r=1&p=garbage"), "garbage", "1.0.12\n", "1.2.3"])
def test_a_tampered_job_list_cursor_is_400(member, make_api_client, cursor):
    _assert_400(make_api_client(member).get("/api/jobs", {"cursor": cursor}), "cursor")


@pytest.mark.parametrize("position", ["999999999999999999", "-999999999999999999", "0", ""])
def test_any_job_list_cursor_of_the_documented_form_is_a_page(member, make_api_client, position):
    # The schema's pattern admits these, so the server must too (instants beyond the calendar are clamped).
    job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member)
    response = make_api_client(member).get("/api/jobs", {"cursor": f"999999999.1.{position}"})
    assert response.status_code == 200, response.content


def test_job_list_cursors_still_walk_every_job_once(member, make_api_client):
    jobs = [job_enqueue(job_type="test_echo", payload={"value": str(i)}, owner=member) for i in range(5)]
    client, seen, url = make_api_client(member), [], "/api/jobs?limit=2"
    while url:
        body = client.get(url).json()
        seen += [j["jobId"] for j in body["results"]]
        url = body["next"]
    assert seen == [str(j.id) for j in reversed(jobs)]
    previous = client.get(client.get("/api/jobs?limit=2").json()["next"]).json()["previous"]
    assert [j["jobId"] for j in client.get(previous).json()["results"]] == [str(j.id) for j in reversed(jobs)][:2]


@pytest.mark.parametrize("offset", [TOO_BIG, "1000001"])
def test_a_huge_offset_is_400_on_conversations_and_messages(user, make_api_client, offset):
    conversation = ConversationFactory(owner=user)
    MessageFactory(conversation=conversation)
    client = make_api_client(user)
    _assert_400(client.get("/api/chat/conversations", {"offset": offset}), "offset")
    _assert_400(client.get(f"/api/chat/conversations/{conversation.pk}", {"offset": offset}), "offset")


def test_the_largest_offset_allowed_is_an_empty_page(user, make_api_client):
    body = make_api_client(user).get("/api/chat/conversations", {"offset": "1000000"}).json()
    assert body["conversations"] == [] and body["pagination"]["offset"] == 1_000_000


@pytest.mark.parametrize(
    "cursor",
    [
        base64.urlsafe_b64encode(b'["9999-12-31T23:59:59-23:00",5]').decode(),  # the old format, out of range
        "garbage",
        "1.2.3",
        "12.",
        ".5",
        "1." + "9" * 19,
        "1.5 2",
    ],
)
def test_a_tampered_audit_cursor_is_400(audit_staff, make_api_client, cursor):
    _assert_400(make_api_client(audit_staff).get("/api/audit-log", {"cursor": cursor}), "cursor")


@pytest.mark.parametrize("cursor", ["999999999999999999.5", "-999999999999999999.999999999999999999", "0.0"])
def test_any_audit_cursor_of_the_documented_form_is_a_page(audit_staff, make_api_client, cursor):
    write_events(EventFactory(occurredAt="2026-01-01T10:00:00Z"))
    response = make_api_client(audit_staff).get("/api/audit-log", {"cursor": cursor})
    assert response.status_code == 200, response.content


def test_audit_cursor_pages_are_in_order_across_equal_instants(audit_staff, make_api_client):
    rows = write_events(
        *[EventFactory(occurredAt="2026-01-01T10:00:00Z") for _ in range(3)],
        EventFactory(occurredAt="2026-01-02T10:00:00Z"),
    )
    client, seen, url = make_api_client(audit_staff), [], "/api/audit-log?limit=1"
    while url:
        body = client.get(url).json()
        seen += [r["id"] for r in body["results"]]
        url = f"/api/audit-log?limit=1&cursor={body['nextCursor']}" if body["nextCursor"] else None
    assert seen == [rows[3].id, rows[2].id, rows[1].id, rows[0].id]


@pytest.mark.parametrize(
    "query, field",
    [
        ({"actor": TOO_BIG}, "actor"),
        ({"from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"to": "9999-12-31T23:59:59-23:00"}, "to"),
    ],
)
def test_out_of_range_audit_filters_are_400(audit_staff, make_api_client, query, field):
    _assert_400(make_api_client(audit_staff).get("/api/audit-log", query), field)


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:00"])
def test_an_out_of_range_since_is_400(member, make_api_client, since):
    _assert_400(make_api_client(member).get("/api/jobs", {"since": since}), "since")


def test_a_null_body_is_400_not_an_empty_request(user, make_api_client):
    response = make_api_client(user).post("/api/chat/conversations", "null", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "validation_error"


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/chat/conversations", {"title": 0}, "title"),
        ("/api/chat/conversations", {"personalityMode": 1}, "personalityMode"),
        ("/api/chat/bot", {"prompt": "hi", "guildId": 0}, "guildId"),
        ("/api/chat/bot", {"prompt": 5}, "prompt"),
    ],
)
def test_member_bodies_take_strings_only_where_strings_are_declared(user, make_api_client, path, body, field):
    _assert_400(make_api_client(user).post(path, body, format="json"), field)


def test_message_content_must_be_a_string(user, make_api_client):
    conversation = ConversationFactory(owner=user)
    response = make_api_client(user).post(
        "/api/chat/messages", {"conversationId": str(conversation.pk), "content": 0}, format="json"
    )
    _assert_400(response, "content")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"action": "x", "errorMessage": 0}, "errorMessage"),
        ({"action": 1}, "action"),
        ({"action": "x", "success": "yes"}, "success"),
        ({"action": "x", "actorId": "7"}, "actorId"),
        ({"action": "x", "details": []}, "details"),
    ],
)
def test_audit_event_fields_take_their_declared_json_types(django_user_model, make_api_client, body, field):
    service = django_user_model.objects.create_user(username="svc-typed")
    service.groups.add(Group.objects.get_or_create(name="service")[0])
    _assert_400(make_api_client(service).post("/api/audit-log", body, format="json"), field)


@pytest.mark.parametrize("later", [0, -1])
def test_a_report_over_an_empty_range_is_accepted(audit_staff, make_api_client, later):
    # The schema cannot state "to after from", so no request it allows may be refused: the range is empty.
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    body = {"occurredFrom": at.isoformat(), "occurredTo": (at + dt.timedelta(days=later)).isoformat()}
    response = make_api_client(audit_staff).post("/api/audit-log/reports", body, format="json")
    assert response.status_code == 202, response.content
    far = {"occurredFrom": "2000-01-01T00:00:00Z", "occurredTo": "2500-01-01T00:00:00Z"}
    assert make_api_client(audit_staff).post("/api/audit-log/reports", far, format="json").status_code == 202
    bad = make_api_client(audit_staff).post(
        "/api/audit-log/reports", {"occurredFrom": at, "occurredTo": 0}, format="json"
    )
    _assert_400(bad, "occurredTo")


@pytest.mark.parametrize(
    "query", ["from=2026-01-02T00:00:00Z&to=2026-01-02T00:00:00Z", "from=2026-01-03T00:00:00Z&to=2026-01-02T00:00:00Z"]
)
def test_an_empty_audit_range_is_an_empty_answer(audit_staff, make_api_client, query):
    write_events(EventFactory(occurredAt="2026-01-02T00:00:00Z"))
    client = make_api_client(audit_staff)
    assert client.get(f"/api/audit-log?{query}").json()["results"] == []
    assert client.get(f"/api/audit-log/stats?{query}").json()["total"] == 0


def test_empty_audit_filters_filter_nothing(audit_staff, make_api_client):
    write_events(EventFactory())
    response = make_api_client(audit_staff).get("/api/audit-log?action=&resourceType=&resourceId=&requestId=")
    assert response.status_code == 200 and len(response.json()["results"]) == 1


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/chat/bot", {"prompt": "\u001e \t"}, "prompt"),
        ("/api/audit-log", {"action": "\u001f"}, "action"),
        ("/api/audit-log", {"action": "x", "ip": " 10.0.0.1"}, "ip"),
    ],
)
def test_blank_text_is_refused_as_the_schema_pattern_says(django_user_model, make_api_client, path, body, field):
    user = UserFactory(username="blank", role="staff")
    _assert_400(make_api_client(user).post(path, body, format="json"), field)


def test_an_empty_format_is_an_unknown_format(member, make_api_client):
    job = job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member)
    response = make_api_client(member).get(f"/api/jobs/{job.pk}/events?format=")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
