"""`Authorization: Token <key>` against hashed API tokens (slimy_site.models.ApiToken).

DRF's TokenAuthentication parses the header and words its errors; only the look-up changes: the
key's SHA-256 is looked up (one indexed query, user joined), and expired tokens are refused.

A web process reuses a token's look-up for TOKEN_CACHE_SECONDS (a client sends many requests with one
token, and the query was a fifth of a submission's time). What that may make stale, and for how long:
- expiry: never — `expires_at` is compared with the clock on every request;
- revocation (the token deleted: admin, `token_rotate`, the user deleted) and changes to the user
  (`is_active`, `is_staff`) made through the ORM's save/delete: at once in the process that made them
  (signals below), within TOKEN_CACHE_SECONDS in the other web processes;
- the same changes made with a bulk `QuerySet.update()` (no signals): within TOKEN_CACHE_SECONDS everywhere.
Every request gets its own copy of the cached user, so per-request state set on it (cached roles) never
outlives the request. 0 turns the cache off.
"""

from __future__ import annotations

import copy
import threading
import time

from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from slimy_site.models import ApiToken
from slimy_site.tokens import token_digest

# digest → (monotonic deadline, token with its user loaded)
_token_cache: dict[str, tuple[float, ApiToken]] = {}
_cache_lock = threading.Lock()
_CACHE_MAX_TOKENS = 10_000


def _token_for(digest: str) -> ApiToken:
    """The token (user joined), a fresh copy per call; raises ApiToken.DoesNotExist."""
    ttl = settings.TOKEN_CACHE_SECONDS
    now = time.monotonic()
    hit = _token_cache.get(digest)
    if hit is not None and hit[0] > now:
        cached = hit[1]
    else:
        cached = ApiToken.objects.select_related("user").get(digest=digest)
        if ttl > 0:
            with _cache_lock:
                if len(_token_cache) >= _CACHE_MAX_TOKENS:
                    _token_cache.clear()
                _token_cache[digest] = (now + ttl, cached)
        else:
            return cached
    # Copies with their own state: nothing set on them during a request reaches the cache.
    token = _model_copy(cached)
    user = _model_copy(cached.user)
    token.user = user
    return token


def _model_copy(instance):
    """What `copy.copy` makes of a model instance (its fields and a copy of its state, the cache of loaded
    relations copied too), without going through pickling's protocol (`__reduce_ex__`, `__getstate__`,
    `__setstate__`): a third of the cost of authenticating from the cache."""
    clone = instance.__class__.__new__(instance.__class__)
    clone.__dict__.update(instance.__dict__)
    state = clone._state = copy.copy(instance._state)
    state.fields_cache = dict(instance._state.fields_cache)
    return clone


def token_cache_clear(*, digests=None, user_ids=None) -> None:
    """Forget cached tokens: these digests, the tokens of these users, or (no argument) all."""
    with _cache_lock:
        if digests is None and user_ids is None:
            _token_cache.clear()
            return
        for digest in digests or ():
            _token_cache.pop(digest, None)
        if user_ids:
            ids = set(user_ids)
            for digest in [d for d, (_, token) in _token_cache.items() if token.user_id in ids]:
                _token_cache.pop(digest, None)


def _on_token_changed(sender, instance, **kwargs):
    token_cache_clear(digests=[instance.digest])


def _on_user_changed(sender, instance, **kwargs):
    token_cache_clear(user_ids=[instance.pk])


def connect_token_cache_signals() -> None:
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_delete, post_save

    post_save.connect(_on_token_changed, sender=ApiToken, dispatch_uid="slimy_site.auth.token_saved")
    post_delete.connect(_on_token_changed, sender=ApiToken, dispatch_uid="slimy_site.auth.token_deleted")
    user_model = get_user_model()
    post_save.connect(_on_user_changed, sender=user_model, dispatch_uid="slimy_site.auth.user_saved")
    post_delete.connect(_on_user_changed, sender=user_model, dispatch_uid="slimy_site.auth.user_deleted")


class HashedTokenAuthentication(TokenAuthentication):
    model = ApiToken

    def authenticate_credentials(self, key):
        try:
            token = _token_for(token_digest(key))
        except ApiToken.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        if token.expired:
            raise exceptions.AuthenticationFailed("Token expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return (token.user, token)
