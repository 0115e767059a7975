"""Roles and the DRF permission classes that check them.

Roles are Django groups — `member`, `club` (members with a club account), `service` (machine
clients, e.g. another service posting audit events) — plus staff (`is_staff`) for admins. Staff pass
every role check. A role that may not use an endpoint is a 403 `permission_denied`; missing or wrong
credentials stay a 401 (DRF checks authentication first).

Who may use what (the schema states it per operation as `x-roles`; README "Accounts"):
- chat (conversations, messages, the bot, their job status): `IsMember` — people, not machines;
- the generic job endpoints (`/api/jobs...`): `HasAnyRole` — the default for every API view, so an
  account whose roles were all removed is suspended everywhere;
- the audit API: `IsService` to post events, `IsStaff` for the rest; `GET /api/me`: any account.

`user_roles()` is the one role look-up every permission class goes through: cache there.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import models
from rest_framework.permissions import BasePermission


class Role(models.TextChoices):
    MEMBER = "member", "member"
    CLUB = "club", "club"
    SERVICE = "service", "service"
    STAFF = "staff", "staff"


# Roles that are groups; staff is the `is_staff` flag.
GROUP_ROLES = (Role.MEMBER, Role.CLUB, Role.SERVICE)


# Group roles by user id, shared by this process's requests for ROLE_CACHE_SECONDS: every API request
# checks roles, and a client sends many requests with one token. A change made through the ORM in this
# process clears the entry at once (`roles_cache_clear`, connected in SlimySiteConfig.ready); other
# processes see it within ROLE_CACHE_SECONDS. `is_staff` and `is_active` are read from the request's user
# each time (a token's user may be up to TOKEN_CACHE_SECONDS old: slimy_site.authentication).
_group_roles_cache: dict[int, tuple[float, frozenset[str]]] = {}
_CACHE_MAX_USERS = 10_000


def _group_roles(user) -> frozenset[str]:
    ttl = settings.ROLE_CACHE_SECONDS
    now = time.monotonic()
    hit = _group_roles_cache.get(user.pk)
    if hit is not None and hit[0] > now:
        return hit[1]
    roles = frozenset(user.groups.filter(name__in=GROUP_ROLES).values_list("name", flat=True))
    if ttl > 0:
        if len(_group_roles_cache) >= _CACHE_MAX_USERS:
            _group_roles_cache.clear()
        _group_roles_cache[user.pk] = (now + ttl, roles)
    return roles


def roles_cache_clear(*, user_ids=None) -> None:
    """Forget cached roles (of `user_ids`, or of everyone)."""
    if user_ids is None:
        _group_roles_cache.clear()
    for pk in user_ids or ():
        _group_roles_cache.pop(pk, None)


def user_roles(user) -> set[str]:
    """The roles of `user` (empty for anonymous users). Cached on the user object per request, and
    the group part per user id across requests (ROLE_CACHE_SECONDS).

    Every role check (the permission classes below, `/api/me`) calls this function and nothing else
    reads the groups, so the cache here covers them all.
    """
    if user is None or not user.is_authenticated:
        return set()
    cached = getattr(user, "_slimy_roles", None)
    if cached is None:
        cached = set(_group_roles(user))
        if user.is_staff:
            cached.add(Role.STAFF)
        user._slimy_roles = cached
    return set(cached)


def _on_groups_changed(sender, instance, action, reverse, pk_set, **kwargs):
    if not action.startswith("post_"):
        return
    if reverse:  # group.user_set changed: pk_set are users (None when cleared: forget everyone)
        roles_cache_clear(user_ids=pk_set)
    else:
        roles_cache_clear(user_ids=[instance.pk])


def _on_group_saved_or_deleted(sender, **kwargs):
    roles_cache_clear()  # a renamed or deleted group changes the roles of all its members


def connect_role_cache_signals() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save

    m2m_changed.connect(
        _on_groups_changed, sender=get_user_model().groups.through, dispatch_uid="slimy_site.roles.groups_changed"
    )
    post_save.connect(_on_group_saved_or_deleted, sender=Group, dispatch_uid="slimy_site.roles.group_saved")
    post_delete.connect(_on_group_saved_or_deleted, sender=Group, dispatch_uid="slimy_site.roles.group_deleted")


def user_has_role(user, *roles: str) -> bool:
    """True when `user` is active and has one of `roles`, or is staff."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    held = user_roles(user)
    return Role.STAFF in held or bool(held & set(roles))


class HasRole(BasePermission):
    """Subclass and set `roles`; or use the ready-made classes below."""

    roles: tuple[str, ...] = ()
    message = "Your role may not use this endpoint."

    def has_permission(self, request, view):
        return user_has_role(request.user, *self.roles)

    @property
    def allowed_roles(self) -> tuple[str, ...]:
        """The roles that pass, staff included (what the schema documents)."""
        return (*self.roles, Role.STAFF)


class IsMember(HasRole):
    """People: members and club members (and staff)."""

    roles = (Role.MEMBER, Role.CLUB)


class IsClub(HasRole):
    roles = (Role.CLUB,)


class IsService(HasRole):
    """Machine clients (and staff)."""

    roles = (Role.SERVICE,)


class IsStaff(HasRole):
    roles = ()


class HasAnyRole(HasRole):
    """Any account with a role: a user whose roles were all taken away can no longer use the API."""

    roles = GROUP_ROLES
