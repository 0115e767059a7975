"""Account writes: create an API user with a role, rotate (or revoke) its token."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from slimy_site.exceptions import Conflict, NotFound, ValidationFailed
from slimy_site.roles import GROUP_ROLES, Role


def user_create(*, username: str, role: str, email: str = "") -> tuple[object, str]:
    """A new user with `role` and an API token. Returns (user, token key); the key is shown once."""
    if role not in Role.values:
        raise ValidationFailed(f"Unknown role {role!r}; choose one of {', '.join(Role.values)}.",
                               details={"role": [f"Must be one of {', '.join(Role.values)}."]})
    User = get_user_model()
    username = (username or "").strip()
    field = User._meta.get_field(User.USERNAME_FIELD)
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
        token = Token.objects.create(user=user)
    return user, token.key


def token_rotate(*, username: str) -> str:
    """Replace the user's token (the old one stops working at once). Returns the new key."""
    User = get_user_model()
    with transaction.atomic():
        user = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
        if user is None:
            raise NotFound(f"No user {username!r}.", code="user_not_found")
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user).key


def token_revoke(*, username: str) -> bool:
    """Delete the user's token; True when there was one."""
    User = get_user_model()
    deleted, _ = Token.objects.filter(user__in=User._default_manager.filter(**{User.USERNAME_FIELD: username})).delete()
    return bool(deleted)
