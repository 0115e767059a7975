"""`Authorization: Token <key>` against hashed API tokens (slimy_site.models.ApiToken).

DRF's TokenAuthentication parses the header and words its errors; only the look-up changes: the
key's SHA-256 is looked up (one indexed query, user joined), and expired tokens are refused.
"""

from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from slimy_site.models import ApiToken
from slimy_site.tokens import token_digest


class HashedTokenAuthentication(TokenAuthentication):
    model = ApiToken

    def authenticate_credentials(self, key):
        try:
            token = ApiToken.objects.select_related("user").get(digest=token_digest(key))
        except ApiToken.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        if token.expired:
            raise exceptions.AuthenticationFailed("Token expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return (token.user, token)
