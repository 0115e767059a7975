"""Property-based fuzz of request bodies, headers and query strings: the API never answers 5xx."""

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from queues.services import job_enqueue

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.urls")]

FUZZ = hsettings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["value", "count", "priority", "delay", "attempts", "queue", "jobId", "timeout"])
echo_bodies = st.dictionaries(field_names | st.text(max_size=10), json_values, max_size=6)
any_body = echo_bodies | json_values
raw_bodies = st.binary(max_size=200) | any_body.map(lambda v: json.dumps(v).encode())
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ]
)


def _check(response):
    assert response.status_code < 500, (response.status_code, response.content[:500])
    if response.status_code >= 400:
        body = response.json()
        assert body["ok"] is False and isinstance(body["error"], str)


@pytest.fixture
def client(member, make_api_client, no_limits):
    return make_api_client(member)


@pytest.fixture
def job(member):
    return job_enqueue(job_type="test_echo", payload={"value": "x"}, owner=member)


@FUZZ
@given(body=any_body, key=st.none() | st.text(max_size=300))
def test_submit_bodies_never_cause_5xx(client, body, key):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    _check(client.post("/api/test/echo", body, format="json", **headers))


@FUZZ
@given(raw=raw_bodies, content_type=content_types, path=st.sampled_from(["/api/test/echo", "retry", "cancel"]))
def test_raw_bodies_never_cause_5xx(client, job, raw, content_type, path):
    url = path if path.startswith("/") else f"/api/jobs/{job.id}/{path}"
    _check(client.generic("POST", url, raw, content_type=content_type))


@FUZZ
@given(body=any_body, action=st.sampled_from(["retry", "cancel"]))
def test_job_action_bodies_never_cause_5xx(client, job, body, action):
    _check(client.post(f"/api/jobs/{job.id}/{action}", body, format="json"))


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["status", "type", "queue", "since", "cursor", "limit", "owner"]) | st.text(max_size=8),
        st.text(max_size=30),
        max_size=4,
    ),
    job_id=st.text(max_size=40),
)
def test_job_reads_never_cause_5xx(client, query, job_id):
    _check(client.get("/api/jobs", query))
    _check(client.get(f"/api/jobs/{job_id.replace('/', '')}"))
