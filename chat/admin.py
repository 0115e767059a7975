"""Conversations and messages in the admin. Messages are read-only here: users write them through jobs."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from chat.models import Conversation, ConversationTombstone, Message, TenantQuota
from chat.selectors import conversation_message_count


def job_admin_url(job_id) -> str:
    # Built from the admin root rather than reversed, so the link works whichever way the job
    # ledger's admin is registered.
    return f"{reverse('admin:index')}queues/jobrecord/{job_id}/change/"


def _job_link(job_id):
    if job_id is None:
        return "-"
    return format_html('<a href="{}">{}</a>', job_admin_url(job_id), job_id)


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("created_at", "role", "author", "excerpt", "personality_mode", "written_by_job")
    readonly_fields = fields
    ordering = ("created_at", "id")
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("author")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="content")
    def excerpt(self, obj):
        return Truncator(obj.content).chars(200)

    @admin.display(description="job")
    def written_by_job(self, obj):
        return _job_link(obj.job_id)


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "personality_mode", "message_count", "created_at", "updated_at")
    list_filter = ("personality_mode",)
    list_select_related = ("owner",)
    search_fields = ("title", "owner__username", "owner__email")
    fields = ("id", "owner", "title", "personality_mode", "message_count", "created_at", "updated_at", "created_by_job")
    readonly_fields = ("id", "owner", "message_count", "created_at", "updated_at", "created_by_job")
    inlines = [MessageInline]
    show_full_result_count = False  # an exact COUNT(*) over every conversation is not worth it

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(message_count=conversation_message_count())

    def has_add_permission(self, request):
        return False  # conversations belong to users, who create them through the API

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj):
        return obj.message_count

    @admin.display(description="created by job")
    def created_by_job(self, obj):
        return _job_link(obj.created_by_job_id)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "author", "created_at", "written_by_job")
    list_filter = ("role", "personality_mode")
    list_select_related = ("conversation", "author")
    search_fields = ("conversation__title", "author__username")
    fields = ("id", "conversation", "role", "author", "content", "personality_mode", "created_at", "written_by_job")
    readonly_fields = fields
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="job")
    def written_by_job(self, obj):
        return _job_link(obj.job_id)


@admin.register(ConversationTombstone)
class ConversationTombstoneAdmin(admin.ModelAdmin):
    list_display = ("conversation_id", "owner", "message_count", "deleted_at", "deleted_by_job")
    list_select_related = ("owner",)
    search_fields = ("owner__username",)
    readonly_fields = ("conversation_id", "owner", "message_count", "deleted_at", "deleted_by_job")
    fields = readonly_fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="deleted by job")
    def deleted_by_job(self, obj):
        return _job_link(obj.deleted_by_job_id)


@admin.register(TenantQuota)
class TenantQuotaAdmin(admin.ModelAdmin):
    list_display = ("tenant", "daily_tokens", "used_today", "note", "updated_at")
    search_fields = ("tenant",)
    fields = ("tenant", "daily_tokens", "note", "used_today")
    readonly_fields = ("used_today",)

    @admin.display(description="used today")
    def used_today(self, obj):
        from chat.quotas import quota_usage

        return quota_usage(tenant=obj.tenant) if obj and obj.tenant else "—"
