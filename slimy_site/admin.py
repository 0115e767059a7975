"""Admin of API tokens: who has one, since when, until when; never the token (only its digest is stored,
and the digest is not shown either). Tokens are issued by `user_add` / `token_rotate`; deleting one here
revokes it."""

from django.contrib import admin

from slimy_site.models import ApiToken


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
