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

from django.db import models
from rest_framework.permissions import BasePermission


class Role(models.TextChoices):
    MEMBER = "member", "member"
    CLUB = "club", "club"
    SERVICE = "service", "service"
    STAFF = "staff", "staff"


# Roles that are groups; staff is the `is_staff` flag.
GROUP_ROLES = (Role.MEMBER, Role.CLUB, Role.SERVICE)


def user_roles(user) -> set[str]:
    """The roles of `user` (empty for anonymous users). Cached on the user object per request.

    Every role check (the permission classes below, `/api/me`) calls this function and nothing else
    reads the groups, so a cache added here covers them all.
    """
    if user is None or not user.is_authenticated:
        return set()
    cached = getattr(user, "_slimy_roles", None)
    if cached is None:
        cached = set(user.groups.filter(name__in=GROUP_ROLES).values_list("name", flat=True))
        if user.is_staff:
            cached.add(Role.STAFF)
        user._slimy_roles = cached
    return set(cached)


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
