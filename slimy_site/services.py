"""Account writes: create an API user with a role, rotate (or revoke) its token, clear login lock-outs."""

from __future__ import annotations

import datetime as dt
from typing import cast

from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models, transaction
from django.utils import timezone

from slimy_site.exceptions import Conflict, NotFound, ValidationFailed
from slimy_site.models import ApiToken
from slimy_site.roles import GROUP_ROLES, Role
from slimy_site.signals import account_action
from slimy_site.tokens import token_digest, token_generate


def api_token_issue(*, user) -> str:
    """A new API token for `user`, expiring after API_TOKEN_TTL_DAYS (0: never). Returns the token: only its
    digest is stored, so this is the one time it can be shown."""
    key = token_generate()
    days = settings.API_TOKEN_TTL_DAYS
    ApiToken.objects.create(
        user=user, digest=token_digest(key), expires_at=timezone.now() + dt.timedelta(days=days) if days > 0 else None
    )
    return key


def user_create(*, username: str, role: str, email: str = "") -> tuple[AbstractBaseUser, str]:
    """A new user with `role` and an API token. Returns (user, token key); the key is shown once."""
    if role not in Role.values:
        raise ValidationFailed(
            f"Unknown role {role!r}; choose one of {', '.join(Role.values)}.",
            details={"role": [f"Must be one of {', '.join(Role.values)}."]},
        )
    User = get_user_model()
    username = (username or "").strip()
    field = cast(models.Field, User._meta.get_field(User.USERNAME_FIELD))  # a concrete field, not a relation
    try:
        username = field.clean(username, None)
    except DjangoValidationError as exc:
        messages = exc.messages
        raise ValidationFailed(f"Invalid username: {' '.join(messages)}", details={"username": messages}) from None
    with transaction.atomic():
        if User._default_manager.filter(**{User.USERNAME_FIELD: username}).exists():
            raise Conflict(f"User {username!r} already exists.", code="user_exists")
        user = User._default_manager.create_user(
            **{User.USERNAME_FIELD: username}, email=email, is_staff=role == Role.STAFF
        )
        user.set_unusable_password()
        user.save(update_fields=["password"])
        if role in GROUP_ROLES:
            group, _ = Group.objects.get_or_create(name=role)
            user.groups.add(group)
        key = api_token_issue(user=user)
    return user, key


def token_rotate(*, username: str) -> str:
    """Replace the user's token (the old one stops working at once). Returns the new key."""
    User = get_user_model()
    with transaction.atomic():
        user = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise NotFound(f"No user {username!r}.", code="user_not_found")
        ApiToken.objects.filter(user=user).delete()
        return api_token_issue(user=user)


def token_revoke(*, username: str) -> bool:
    """Delete the user's tokens; True when there was one."""
    User = get_user_model()
    deleted, _ = ApiToken.objects.filter(
        user__in=User._default_manager.filter(**{User.USERNAME_FIELD: username})
    ).delete()
    return bool(deleted)


def login_lockouts_clear(*, attempt_ids, request) -> int:
    """Delete these failed-login records (django-axes), which lifts their lock-outs, and announce it for the
    audit trail (`admin.login_lockout_clear`). Returns how many were cleared."""
    with transaction.atomic():
        attempts = AccessAttempt.objects.select_for_update().filter(pk__in=list(attempt_ids))
        cleared = [
            {"username": a.username or "", "ipAddress": a.ip_address or "", "failures": a.failures_since_start}
            for a in attempts
        ]
        attempts.delete()
        if cleared:
            usernames = sorted({c["username"] for c in cleared})
            account_action.send(
                sender=None,
                request=request,
                action="admin.login_lockout_clear",
                resource_type="user",
                resource_id=usernames[0] if len(usernames) == 1 else "",
                details={"cleared": cleared},
            )
    return len(cleared)
