import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db


def test_live(client):
    assert client.get("/health/live").status_code == 200


def test_ready_when_everything_answers(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "migrations": "ok"}


def test_ready_names_redis_when_it_is_down(client, monkeypatch):
    from tests.redis_server import free_port

    monkeypatch.setattr(settings, "REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    response = client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["redis"] == "unavailable" and body["checks"]["database"] == "ok"
    assert body["error"] == "not_ready"


def test_request_id_is_echoed_or_generated(client):
    assert client.get("/health/live", HTTP_X_REQUEST_ID="abc-12345678").headers["X-Request-ID"] == "abc-12345678"
    generated = client.get("/health/live", HTTP_X_REQUEST_ID="bad id\n").headers["X-Request-ID"]
    assert len(generated) == 32 and generated != "bad id\n"
