"""Role look-ups are cached per user across requests (ROLE_CACHE_SECONDS); changes apply at once."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from slimy_site.roles import Role, user_roles

pytestmark = pytest.mark.django_db


def _fresh(user):
    return get_user_model().objects.get(pk=user.pk)  # what each request's authentication loads


def _group_queries(ctx) -> int:
    return sum("auth_group" in q["sql"] for q in ctx.captured_queries)


def test_later_requests_of_the_same_user_do_not_read_the_groups_again(user):
    user.groups.add(Group.objects.get_or_create(name=Role.MEMBER)[0])
    with CaptureQueriesContext(connection) as ctx:
        assert user_roles(_fresh(user)) == {Role.MEMBER}
        assert user_roles(_fresh(user)) == {Role.MEMBER}
        assert user_roles(_fresh(user)) == {Role.MEMBER}
    assert _group_queries(ctx) == 1


def test_cache_off_reads_every_time(user, settings):
    settings.ROLE_CACHE_SECONDS = 0
    with CaptureQueriesContext(connection) as ctx:
        user_roles(_fresh(user))
        user_roles(_fresh(user))
    assert _group_queries(ctx) == 2


def test_group_changes_apply_at_once_both_ways(django_user_model):
    user = django_user_model.objects.create_user(username="no-role-yet")  # the `user` fixture is a member
    member = Group.objects.get_or_create(name=Role.MEMBER)[0]
    club = Group.objects.get_or_create(name=Role.CLUB)[0]
    assert user_roles(_fresh(user)) == set()
    user.groups.add(member)
    assert user_roles(_fresh(user)) == {Role.MEMBER}
    club.user_set.add(user)  # from the group's side
    assert user_roles(_fresh(user)) == {Role.MEMBER, Role.CLUB}
    user.groups.remove(member)
    assert user_roles(_fresh(user)) == {Role.CLUB}
    club.delete()
    assert user_roles(_fresh(user)) == set()


def test_staff_flag_is_never_cached(user):
    assert Role.STAFF not in user_roles(_fresh(user))
    get_user_model().objects.filter(pk=user.pk).update(is_staff=True)
    assert Role.STAFF in user_roles(_fresh(user))


def test_revoked_role_is_refused_on_the_next_request(make_api_client, django_user_model):
    service_user = django_user_model.objects.create_user(username="svc-x", password="pw-svc-123")
    service_user.groups.add(Group.objects.get_or_create(name=Role.SERVICE)[0])
    client = make_api_client(service_user)
    assert client.post("/api/audit-log", {"action": "sync"}, format="json").status_code == 202
    service_user.groups.clear()
    denied = client.post("/api/audit-log", {"action": "sync"}, format="json")
    assert denied.status_code == 403 and denied.json()["error"] == "permission_denied"
