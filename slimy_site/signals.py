"""Hooks the site fires about accounts; the audit app records them (nothing here depends on it)."""

from django.dispatch import Signal

# A staff member acted on accounts (e.g. cleared a login lock-out).
# request, action, resource_type, resource_id, details, success, error_message
account_action = Signal()
