import pytest
from rest_framework import serializers

from queues.checks import check_job_definitions
from queues.definitions import JobDefinition, Registry, RetryPolicy, registry


def test_default_policy_is_three_attempts_with_backoff_2_4_8():
    policy = JobDefinition.retry
    assert policy.max_attempts == 3
    assert [policy.delay_after(n) for n in (1, 2, 3)] == [2, 4, 8]


def test_backoff_is_capped():
    assert RetryPolicy(backoff_base=2, backoff_max=5).delay_after(10) == 5


def test_validate_rejects_unknown_fields_and_names_them():
    definition = registry.get("test_echo")
    with pytest.raises(serializers.ValidationError) as err:
        definition.validate({"value": "x", "attempts": 9})
    assert "attempts" in err.value.detail


def test_validate_names_invalid_fields():
    with pytest.raises(serializers.ValidationError) as err:
        registry.get("test_echo").validate({"count": 99})
    assert set(err.value.detail) == {"value", "count"}


def test_validate_rejects_non_objects():
    with pytest.raises(serializers.ValidationError):
        registry.get("test_echo").validate(["value"])


def test_validation_from_many_threads_at_once_keeps_each_payload_its_own():
    # One serializer validates every payload of a type (queues.definitions._payload_validator): threads
    # validating different payloads at once must each get their own data back, and their own errors.
    from concurrent.futures import ThreadPoolExecutor

    definition = registry.get("test_echo")

    def check(n):
        for i in range(200):
            value = f"{n}-{i}"
            assert definition.validate({"value": value, "count": 1 + i % 3}) == {"value": value, "count": 1 + i % 3}
            with pytest.raises(serializers.ValidationError) as err:
                definition.validate({"value": value, "count": 99})
            assert set(err.value.detail) == {"count"}

    with ThreadPoolExecutor(8) as pool:
        for outcome in [pool.submit(check, n) for n in range(8)]:
            outcome.result()


def test_registry_reports_duplicate_names(monkeypatch):
    fresh = Registry()
    monkeypatch.setattr("queues.definitions.registry", fresh)

    class One(JobDefinition):
        name = "dup_name"

    class Two(JobDefinition):
        name = "dup_name"

    assert fresh.duplicates and fresh.duplicates[0][0] == "dup_name"
    fresh._loaded = True
    errors = check_job_definitions()
    assert [e.id for e in errors] == ["queues.E001"]


def test_check_reports_unknown_queue(monkeypatch):
    fresh = Registry()
    fresh._loaded = True
    monkeypatch.setattr("queues.definitions.registry", fresh)

    class Bad(JobDefinition):
        name = "bad_queue_job"
        queue = "nowhere"

    assert [e.id for e in check_job_definitions()] == ["queues.E002"]


def test_shipped_definitions_pass_the_checks():
    assert check_job_definitions() == []
