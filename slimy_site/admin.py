"""Admin of accounts' security: API tokens and login lock-outs.

API tokens: who has one, since when, until when; never the token (only its digest is stored, and the
digest is not shown either). Tokens are issued by `user_add` / `token_rotate`; deleting one revokes it.
"""

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin, messages

from slimy_site.models import ApiToken
from slimy_site.services import login_lockouts_clear


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "created_at", "expires_at", "legacy")
    list_filter = ("legacy",)
    search_fields = ("user__username",)
    list_select_related = ("user",)
    fields = ("user", "created_at", "expires_at", "legacy")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


# Login lock-outs (django-axes): clearing one, by the action or by deleting records, goes through the
# audited service. Needs `axes.delete_accessattempt`.
if admin.site.is_registered(AccessAttempt):
    admin.site.unregister(AccessAttempt)


@admin.register(AccessAttempt)
class LoginLockoutAdmin(AccessAttemptAdmin):
    actions = ["clear_lockouts"]

    @admin.action(permissions=["delete"], description="Clear the lock-out of the selected records (audited)")
    def clear_lockouts(self, request, queryset):
        cleared = login_lockouts_clear(attempt_ids=queryset.values_list("pk", flat=True), request=request)
        self.message_user(request, f"{cleared} lock-out record(s) cleared.", messages.SUCCESS)

    def delete_model(self, request, obj):
        login_lockouts_clear(attempt_ids=[obj.pk], request=request)

    def delete_queryset(self, request, queryset):
        login_lockouts_clear(attempt_ids=queryset.values_list("pk", flat=True), request=request)
