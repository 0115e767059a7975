"""The audit trail: one append-only AuditLog row per event, hash-chained in id order.

`AuditChainHead` is the single row every writer locks before appending, so the chain has one order
even with several audit workers. `AuditChainGap` records what retention clean-up removed between two
surviving rows (the hash of the last removed row), so verification still works after old rows are gone.
"""

from django.conf import settings
from django.db import models

GENESIS_HASH = "0" * 64


class AuditLog(models.Model):
    id = models.BigAutoField(primary_key=True)
    # Chosen by the producer, so a retried job (or a replayed POST) never writes an event twice.
    event_id = models.UUIDField(unique=True, editable=False)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField()
    # The live link (NULL once the user is deleted) and the id kept for ever as a plain integer.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        db_column="actor_user_id",
        related_name="audit_events",
    )
    actor_ref = models.BigIntegerField(null=True, blank=True, help_text="The actor's user id, kept after deletion.")
    actor_label = models.CharField(max_length=150, blank=True, default="", help_text="The actor's username then.")
    action = models.CharField(max_length=100)
    resource_type = models.CharField(max_length=100, blank=True, default="")
    resource_id = models.CharField(max_length=255, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")
    session_id = models.CharField(max_length=128, blank=True, default="")
    request_id = models.CharField(max_length=64, blank=True, default="")
    success = models.BooleanField(default=True)
    error_message = models.TextField(blank=True, default="")
    # Tamper evidence: row_hash = sha256(canonical content + prev_hash); prev_hash = the previous row's row_hash.
    prev_hash = models.CharField(max_length=64)
    row_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["-occurred_at", "-id"], name="audit_occurred"),
            models.Index(fields=["actor_ref", "-occurred_at", "-id"], name="audit_actor_occurred"),
            models.Index(fields=["action", "-occurred_at", "-id"], name="audit_action_occurred"),
            models.Index(
                fields=["resource_type", "resource_id", "-occurred_at", "-id"], name="audit_resource_occurred"
            ),
            models.Index(fields=["request_id"], name="audit_request_id", condition=~models.Q(request_id="")),
        ]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self):
        return f"#{self.id} {self.action} {self.resource_type}:{self.resource_id}"


class AuditChainHead(models.Model):
    """The end of the chain (one row, id=1): locked by every append and by clean-up."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_id = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    length = models.BigIntegerField(default=0, help_text="Rows ever appended.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "audit chain head"

    def __str__(self):
        return f"audit chain head: {self.length} rows, last id {self.last_id}"


class AuditChainGap(models.Model):
    """A checkpoint left by retention: rows after `after_id` up to `last_deleted_id` were removed on purpose.

    The next surviving row's prev_hash must equal `last_hash` (the hash of the last removed row).
    `after_id` 0 means the gap starts at the beginning of the chain.
    """

    after_id = models.BigIntegerField(unique=True)
    first_deleted_id = models.BigIntegerField()
    last_deleted_id = models.BigIntegerField()
    last_hash = models.CharField(max_length=64)
    deleted_count = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["after_id"]
        verbose_name = "audit retention checkpoint"

    def __str__(self):
        return f"after #{self.after_id}: {self.deleted_count} removed up to #{self.last_deleted_id}"


class AuditStagedEvent(models.Model):
    """The ingest buffer: an event accepted by `audit_event_record`, not yet in the chain.

    Written in the caller's transaction (so an event about a rolled-back change never exists) and
    removed in the same transaction that appends it to the chain (so a drain that dies mid-batch leaves
    it here for the next one). `event` is the validated, redacted log_event payload.
    """

    id = models.BigAutoField(primary_key=True)
    event = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "staged audit event"

    def __str__(self):
        return f"staged audit event {self.pk}"
