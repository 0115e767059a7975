"""Every job record carries its tenant: the guild when the definition names a tenant field, else the owner."""

import pytest

from queues.definitions import JobDefinition
from queues.models import JobRecord
from queues.services import job_enqueue

pytestmark = pytest.mark.django_db(transaction=True)


def test_guild_id_is_the_tenant(user):
    job = job_enqueue(job_type="test_guild_echo", payload={"value": "a", "guildId": "g-42"}, owner=user)
    assert JobRecord.objects.get(pk=job.pk).tenant == "g-42"


def test_without_guild_the_owner_is_the_tenant(user):
    job = job_enqueue(job_type="test_guild_echo", payload={"value": "a", "guildId": ""}, owner=user)
    assert JobRecord.objects.get(pk=job.pk).tenant == f"user:{user.pk}"


def test_a_definition_without_tenant_field_uses_the_owner(user):
    job = job_enqueue(job_type="test_echo", payload={"value": "a"}, owner=user)
    assert JobRecord.objects.get(pk=job.pk).tenant == f"user:{user.pk}"


def test_anonymous_job_without_guild_has_no_tenant():
    job = job_enqueue(job_type="test_guild_echo", payload={"value": "a"})
    assert JobRecord.objects.get(pk=job.pk).tenant == ""


def test_tenant_of_is_pure_and_overridable():
    class Custom(JobDefinition):
        @classmethod
        def tenant_of(cls, payload, owner_id):
            return f"club:{payload['club']}"

    assert Custom.tenant_of({"club": 7}, 1) == "club:7"
    assert JobDefinition.tenant_of({"guildId": "x"}, None) == ""  # no tenant_field: the field is ignored


def test_tenant_filters_the_ledger(user, other_user):
    job_enqueue(job_type="test_guild_echo", payload={"value": "a", "guildId": "g-1"}, owner=user)
    job_enqueue(job_type="test_guild_echo", payload={"value": "b", "guildId": "g-1"}, owner=other_user)
    job_enqueue(job_type="test_guild_echo", payload={"value": "c", "guildId": "g-2"}, owner=user)
    assert JobRecord.objects.filter(tenant="g-1").count() == 2
