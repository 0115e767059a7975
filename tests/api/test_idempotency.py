"""Idempotency-Key on job-creating POSTs: replays, reuse with another body, concurrent duplicates."""

import threading

import pytest
from django.db import connection

from queues.models import JobRecord

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.api.urls")]

ECHO = "/api/test/echo"


def _post(client, body, key):
    return client.post(ECHO, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_same_key_and_body_returns_the_original_answer_even_after_the_job_ran(
    member, make_api_client, run_worker, redis_conn
):
    client = make_api_client(member)
    first = _post(client, {"value": "once"}, "order-17")
    assert first.status_code == 202
    run_worker()
    assert client.get(f"/api/jobs/{first.json()['jobId']}").json()["status"] == "completed"
    again = _post(client, {"value": "once"}, "order-17")
    assert again.status_code == 200
    assert again.json() == first.json()  # same body, including the status it had when accepted
    assert JobRecord.objects.count() == 1
    assert redis_conn.lrange("test:ran", 0, -1) == [b"once:1"]


def test_replay_without_the_stored_answer_rebuilds_the_same_body(member, make_api_client, redis_conn):
    client = make_api_client(member)
    first = _post(client, {"value": "once"}, "order-18")
    for key in redis_conn.scan_iter("slimy:idempotency:*"):
        redis_conn.delete(key)
    again = _post(client, {"value": "once"}, "order-18")
    assert again.status_code == 200 and again.json() == first.json()


def test_same_key_with_another_body_is_422(member, make_api_client):
    client = make_api_client(member)
    _post(client, {"value": "a"}, "k-1")
    response = _post(client, {"value": "b"}, "k-1")
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert JobRecord.objects.count() == 1


def test_keys_belong_to_one_user(member, other_member, make_api_client):
    a = _post(make_api_client(member), {"value": "a"}, "shared")
    b = _post(make_api_client(other_member), {"value": "a"}, "shared")
    assert a.status_code == b.status_code == 202
    assert a.json()["jobId"] != b.json()["jobId"]


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there", "ünïcode"])
def test_invalid_keys_are_400(member, make_api_client, key):
    response = _post(make_api_client(member), {"value": "a"}, key)
    assert response.status_code == 400 and response.json()["error"] == "invalid_idempotency_key"
    assert JobRecord.objects.count() == 0


def test_concurrent_duplicates_create_one_job(member, make_api_client):
    threads_n = 6
    barrier = threading.Barrier(threads_n)
    results = [None] * threads_n

    def submit(i):
        try:
            client = make_api_client(member)
            barrier.wait(timeout=10)
            response = _post(client, {"value": "race"}, "same-key")
            results[i] = (response.status_code, response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r is not None for r in results), results
    statuses = sorted(r[0] for r in results)
    assert statuses == [200] * (threads_n - 1) + [202], results
    assert len({r[1]["jobId"] for r in results}) == 1
    assert JobRecord.objects.count() == 1
