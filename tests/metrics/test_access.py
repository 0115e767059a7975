"""/metrics and /api/metrics: staff or the metrics bearer token only, errors in the API shape."""

import pytest

pytestmark = pytest.mark.django_db

URLS = ["/metrics", "/api/metrics"]


@pytest.mark.parametrize("url", URLS)
def test_anonymous_is_401_with_bearer_challenge(client, url):
    response = client.get(url)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["ok"] is False and response.json()["error"] == "not_authenticated"


@pytest.mark.parametrize("url", URLS)
def test_non_staff_user_is_403(make_api_client, user, url):
    response = make_api_client(user).get(url)
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


@pytest.mark.parametrize("url", URLS)
def test_staff_token_and_session_are_allowed(make_api_client, staff_user, client, url):
    assert make_api_client(staff_user).get(url).status_code == 200
    client.force_login(staff_user)
    assert client.get(url).status_code == 200


@pytest.mark.parametrize("url", URLS)
def test_metrics_token_as_bearer(client, settings, url):
    settings.METRICS_TOKEN = "scrape-secret-0123456789"
    assert client.get(url, HTTP_AUTHORIZATION="Bearer scrape-secret-0123456789").status_code == 200
    wrong = client.get(url, HTTP_AUTHORIZATION="Bearer scrape-secret-0123456780")
    assert wrong.status_code == 401 and wrong.json()["error"] == "authentication_failed"
    assert client.get(url, HTTP_AUTHORIZATION="Bearer ").status_code == 401


@pytest.mark.parametrize("url", URLS)
def test_no_bearer_token_is_accepted_when_none_is_configured(client, settings, url):
    settings.METRICS_TOKEN = ""
    response = client.get(url, HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 401
    assert client.get(url, HTTP_AUTHORIZATION="Bearer anything").status_code == 401


def test_scrapers_asking_for_text_or_openmetrics_get_it(make_api_client, staff_user):
    api = make_api_client(staff_user)
    plain = api.get("/metrics", HTTP_ACCEPT="text/plain")
    assert plain.status_code == 200 and plain["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE slimy_queue_jobs gauge" in plain.content
    open_metrics = api.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")
    assert open_metrics["Content-Type"].startswith("application/openmetrics-text")
    assert open_metrics.content.rstrip().endswith(b"# EOF")


def test_a_non_staff_token_user_cannot_read_the_snapshot_even_with_a_session(client, user):
    client.force_login(user)
    assert client.get("/api/metrics").status_code == 403
