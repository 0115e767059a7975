"""API tokens, stored hashed (see slimy_site.tokens)."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    # The SHA-256 of the token; the token itself is shown once, when it is issued, and never stored.
    digest = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    legacy = models.BooleanField(
        default=False,
        editable=False,
        help_text="Migrated from a plain-text token of an earlier version (no slimy_ prefix); rotate it.",
    )

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self):
        return f"API token of {self.user} ({self.created_at:%Y-%m-%d})"

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
