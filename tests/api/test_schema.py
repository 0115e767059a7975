"""OpenAPI: the schema validates without warnings, lists error codes per endpoint, docs work offline."""

import io

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_generation_has_no_warnings_and_validates(tmp_path):
    # Fails on any warning or on a schema that is not valid OpenAPI 3.
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yaml"),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert yaml.safe_load((tmp_path / "schema.yaml").read_text())["openapi"].startswith("3.")


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def _codes(operation, status):
    response = operation["responses"][str(status)]
    return {example["value"]["error"] for example in response["content"]["application/json"]["examples"].values()}


def test_every_operation_lists_the_shared_error_codes(schema):
    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert operations
    for operation in operations:
        assert {"not_authenticated", "authentication_failed"} <= _codes(operation, 401), operation["operationId"]
        # Event streams may also be refused for too many open streams.
        expected_429 = (
            {"rate_limited", "too_many_streams"} if operation["operationId"] == "jobs_events" else {"rate_limited"}
        )
        assert _codes(operation, 429) == expected_429, operation["operationId"]
        assert _codes(operation, 500) == {"internal_error"}


def test_job_endpoints_list_their_own_error_codes(schema):
    paths = schema["paths"]
    assert _codes(paths["/api/jobs/{job_id}"]["get"], 404) == {"job_not_found"}
    retry = paths["/api/jobs/{job_id}/retry"]["post"]
    assert _codes(retry, 409) == {"job_not_retryable"}
    assert _codes(retry, 503) == {"queue_full", "queues_unavailable", "database_unavailable"}
    assert {"validation_error", "malformed_request"} <= _codes(retry, 400)
    assert _codes(paths["/api/jobs/{job_id}/cancel"]["post"], 409) == {"job_not_cancellable"}
    assert schema["components"]["securitySchemes"]["tokenAuth"]["name"] == "Authorization"


def test_swagger_ui_is_served_without_a_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn." not in html and "https://" not in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")  # shipped, offline


# Operations that create a job through queues.api.submit.accept_job (issue 19, item 5).
SUBMITTING = {
    "chat_conversations_create",
    "chat_conversation_update",
    "chat_conversation_delete",
    "chat_messages_create",
    "chat_bot_create",
    "api_audit_log_create",
    "api_audit_log_reports_create",
}


def test_every_job_submitting_operation_lists_the_same_submit_codes(schema):
    from slimy_site.schema import ERROR_CODES, SUBMIT_ERROR_CODES

    found = set()
    for path in schema["paths"].values():
        for method, operation in path.items():
            accepted = operation["responses"].get("202", {}).get("content", {}).get("application/json", {})
            ref = accepted.get("schema", {}).get("$ref", "")
            if method == "get" or not ref:
                continue
            component = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
            if not {"jobId", "statusUrl"} <= set(component["properties"]):
                continue
            found.add(operation["operationId"])
            assert "200" in operation["responses"], operation["operationId"]  # Idempotency-Key replays
            for code in SUBMIT_ERROR_CODES:
                assert code in _codes(operation, ERROR_CODES[code][0]), (operation["operationId"], code)
    assert found == SUBMITTING


def test_request_bodies_are_closed(schema):
    # The server refuses unknown fields, so the schema says so.
    for name, component in schema["components"]["schemas"].items():
        if name.endswith("Request") and component.get("type") == "object":
            assert component.get("additionalProperties") is False, name


def test_chat_reuses_the_shared_error_and_accepted_serializers():
    import chat.apis
    from chat.jobs import TitleField
    from queues.api.submit import JobAcceptedSerializer

    assert chat.apis.JobAcceptedSerializer is JobAcceptedSerializer
    assert not hasattr(chat.apis, "ErrorSerializer")
    assert chat.apis.TitleField is TitleField
    assert issubclass(chat.apis.ConversationJobAcceptedSerializer, JobAcceptedSerializer)
