"""The job ledger in the Django admin: find any job fast, see what it did, act on it.

Built for a table of millions of rows: no full COUNT(*) per page (PostgreSQL's estimate above
queues.selectors.jobs.ESTIMATE_THRESHOLD), filters that need no query to list their choices,
exact-match search on indexed columns. Records are read-only here; they change only through the actions, which call services.
"""

from __future__ import annotations

import json
import uuid

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db.models import F, Q
from django.urls import NoReverseMatch, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html

from queues.admin import actions as admin_actions
from queues.admin import views as admin_views
from queues.constants import JobStatus
from queues.definitions import registry
from queues.models import JobRecord
from queues.selectors import queryset_count_estimate

STATUS_COLOURS = {
    JobStatus.QUEUED: "#2f6fb0",
    JobStatus.SCHEDULED: "#6b5bb5",
    JobStatus.STARTED: "#b07d00",
    JobStatus.RETRYING: "#c15b00",
    JobStatus.COMPLETED: "#2e7d32",
    JobStatus.FAILED: "#c62828",
    JobStatus.CANCELLED: "#666666",
}


class EstimatedCountPaginator(Paginator):
    estimated = False

    @cached_property
    def count(self):
        count, self.estimated = queryset_count_estimate(self.object_list)
        return count


class JobTypeFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(registry.all())]

    def queryset(self, request, queryset):
        return queryset.filter(job_type=self.value()) if self.value() else queryset


class InternalJobsFilter(admin.SimpleListFilter):
    """Internal job types (`JobDefinition.internal`: audit writes, reconciler passes) are hidden unless
    asked for, or unless the list is narrowed to one type or searched (an exact id must always match).
    """

    title = "internal jobs"
    parameter_name = "internal"
    SHOW, ONLY = "show", "only"

    def lookups(self, request, model_admin):
        return [(self.SHOW, "shown"), (self.ONLY, "only internal")]

    @classmethod
    def hides(cls, params) -> bool:
        """Whether a list with these query parameters leaves internal jobs out."""
        return params.get(cls.parameter_name) not in (cls.SHOW, cls.ONLY) and not (
            params.get(JobTypeFilter.parameter_name) or params.get("q")
        )

    def queryset(self, request, queryset):
        if self.value() == self.ONLY:
            return queryset.filter(job_type__in=registry.internal_names())
        if self.hides(request.GET):
            return queryset.exclude(job_type__in=registry.internal_names())
        return queryset

    def choices(self, changelist):
        yield {
            "selected": self.value() not in (self.SHOW, self.ONLY),
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "hidden",
        }
        for value, title in self.lookup_choices:
            yield {
                "selected": self.value() == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": title,
            }


class OwnerFilter(admin.SimpleListFilter):
    """A username box instead of a list: listing every owner would scan the whole table."""

    title = "owner (username)"
    parameter_name = "owner"
    template = "admin/queues/input_filter.html"

    def lookups(self, request, model_admin):
        return [("", "")]  # a filter without lookups is hidden; the template ignores them

    def has_output(self):
        return True

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        return queryset.filter(owner__username=value) if value else queryset

    def choices(self, changelist):
        yield {
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "clear_query": changelist.get_query_string(remove=[self.parameter_name]),
            "hidden": [(k, v) for k, v in changelist.params.items() if k != self.parameter_name],
        }


class TenantFilter(OwnerFilter):
    """Exact tenant (guild id or `user:<id>`), typed: listing every tenant would scan the whole table."""

    title = "tenant"
    parameter_name = "tenant"

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        return queryset.filter(tenant=value) if value else queryset


def _pretty(value) -> str:
    if value in (None, "", {}, []):
        return "—"
    return format_html("<pre class='slimy-json'>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


@admin.register(JobRecord)
class JobRecordAdmin(admin.ModelAdmin):
    list_display = (
        "short_id",
        "job_type",
        "queue",
        "coloured_status",
        "owner_link",
        "priority",
        "attempts_display",
        "created_at",
        "duration",
        "tenant",
    )
    list_display_links = ("short_id",)
    list_filter = (
        "status",
        "queue",
        JobTypeFilter,
        InternalJobsFilter,
        OwnerFilter,
        TenantFilter,
        "priority",
        ("created_at", admin.DateFieldListFilter),
    )
    search_fields = ("id",)  # replaced by get_search_results; declared so the box is shown
    search_help_text = "Exact job id, request id, owner username or idempotency key."
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # facet counts are a COUNT per choice over the whole table
    paginator = EstimatedCountPaginator
    ordering = ("-created_at",)
    actions = ["retry_jobs", "cancel_jobs", "requeue_copies", "delete_from_redis"]
    change_list_template = "admin/queues/jobrecord/change_list.html"
    change_form_template = "admin/queues/jobrecord/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "job_type",
                    "queue",
                    "coloured_status",
                    "priority",
                    "owner_link",
                    "tenant",
                    "attempts_display",
                    "worker_name",
                    "request_id",
                    "idempotency_key",
                )
            },
        ),
        (
            "Timing",
            {
                "fields": (
                    "created_at",
                    "scheduled_for",
                    "started_at",
                    "finished_at",
                    "updated_at",
                    "duration",
                    "progress_pretty",
                )
            },
        ),
        ("Payload and result", {"fields": ("payload_pretty", "result_pretty")}),
        ("Error", {"fields": ("error_code", "error_message", "traceback")}),
    )
    readonly_fields = (
        "id",
        "job_type",
        "queue",
        "coloured_status",
        "priority",
        "owner_link",
        "tenant",
        "attempts_display",
        "worker_name",
        "request_id",
        "idempotency_key",
        "created_at",
        "scheduled_for",
        "started_at",
        "finished_at",
        "updated_at",
        "duration",
        "progress_pretty",
        "payload_pretty",
        "result_pretty",
        "error_code",
        "error_message",
        "traceback",
    )

    # --- the list
    def get_queryset(self, request):
        return super().get_queryset(request).annotate(run_time=F("finished_at") - F("started_at"))

    def get_search_results(self, request, queryset, search_term):
        # Exact matches on indexed columns only, OR-ed on this table (no join), so PostgreSQL can
        # combine index scans; an icontains over a million rows would scan them all.
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(request_id=term) | Q(idempotency_key=term)
        owner_ids = list(get_user_model()._default_manager.filter(username=term).values_list("pk", flat=True)[:1])
        if owner_ids:
            match |= Q(owner_id__in=owner_ids)
        try:
            match |= Q(pk=uuid.UUID(term))
        except ValueError:
            pass
        return queryset.filter(match), False

    @admin.display(description="id", ordering="id")
    def short_id(self, obj):
        return format_html("<span title='{}'>{}</span>", obj.pk, str(obj.pk)[:8])

    @admin.display(description="status", ordering="status")
    def coloured_status(self, obj):
        colour = STATUS_COLOURS.get(obj.status, "#333")
        return format_html(
            "<span class='slimy-status' style='color:#fff;background:{};padding:1px 6px;border-radius:8px'>{}</span>",
            colour,
            obj.status,
        )

    @admin.display(description="owner", ordering="owner__username")
    def owner_link(self, obj):
        if obj.owner_id is None:
            return "—"
        user_opts = get_user_model()._meta
        try:
            url = reverse(f"admin:{user_opts.app_label}_{user_opts.model_name}_change", args=[obj.owner_id])
        except NoReverseMatch:
            return obj.owner.get_username()
        return format_html("<a href='{}'>{}</a>", url, obj.owner.get_username())

    @admin.display(description="attempts", ordering="attempts")
    def attempts_display(self, obj):
        return f"{obj.attempts}/{obj.max_attempts}"

    @admin.display(description="duration", ordering="run_time")
    def duration(self, obj):
        seconds = obj.duration_seconds
        if seconds is None:
            return "—"
        return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"

    # --- the detail page
    @admin.display(description="payload")
    def payload_pretty(self, obj):
        return _pretty(obj.payload)

    @admin.display(description="result")
    def result_pretty(self, obj):
        return _pretty(obj.result)

    @admin.display(description="progress")
    def progress_pretty(self, obj):
        return _pretty(obj.progress)

    @admin.display(description="traceback")
    def traceback(self, obj):
        return format_html("<pre class='slimy-trace'>{}</pre>", obj.error_traceback) if obj.error_traceback else "—"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(
            request,
            object_id,
            form_url,
            extra_context={**(extra_context or {}), **admin_views.job_detail_context(self, request, object_id)},
        )

    def changelist_view(self, request, extra_context=None):
        extra = {"can_manage_queues": self.has_manage_queues_permission(request)}
        if InternalJobsFilter.hides(request.GET):
            query = request.GET.copy()
            query[InternalJobsFilter.parameter_name] = InternalJobsFilter.SHOW
            extra["internal_hidden"] = {"types": registry.internal_names(), "show_url": "?" + query.urlencode()}
        return super().changelist_view(request, extra_context={**(extra_context or {}), **extra})

    # --- permissions: the ledger is read-only; state changes go through the actions
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_retry_permission(self, request, obj=None):
        return request.user.has_perm("queues.retry_jobrecord")

    def has_cancel_permission(self, request, obj=None):
        return request.user.has_perm("queues.cancel_jobrecord")

    def has_manage_queues_permission(self, request, obj=None):
        return request.user.has_perm("queues.manage_queues")

    # --- actions (changelist, bulk); the detail page uses admin_views.job_action_view
    @admin.action(description="Retry selected jobs", permissions=["retry"])
    def retry_jobs(self, request, queryset):
        return admin_actions.bulk_action(self, request, queryset, "retry")

    @admin.action(description="Cancel selected jobs", permissions=["cancel"])
    def cancel_jobs(self, request, queryset):
        return admin_actions.bulk_action(self, request, queryset, "cancel")

    @admin.action(description="Re-enqueue a copy of selected jobs", permissions=["retry"])
    def requeue_copies(self, request, queryset):
        return admin_actions.bulk_action(self, request, queryset, "requeue_copy")

    @admin.action(description="Delete selected jobs from Redis and mark cancelled", permissions=["cancel"])
    def delete_from_redis(self, request, queryset):
        return admin_actions.bulk_action(self, request, queryset, "delete_from_redis")

    def get_actions(self, request):
        # Django's bulk delete collects every selected row in memory (a million with "select all");
        # finished records are removed with the dashboard's clean operation instead.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def get_urls(self):
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        custom = [
            path("dashboard/", wrap(admin_views.dashboard_view(self)), name=f"{prefix}_dashboard"),
            path("dashboard/pause/", wrap(admin_views.queue_pause_view(self)), name=f"{prefix}_pause"),
            path("dashboard/resume/", wrap(admin_views.queue_resume_view(self)), name=f"{prefix}_resume"),
            path("dashboard/retry-failed/", wrap(admin_views.retry_failed_view(self)), name=f"{prefix}_retry_failed"),
            path("dashboard/clean/", wrap(admin_views.clean_view(self)), name=f"{prefix}_clean"),
            path("<path:object_id>/act/<str:action>/", wrap(admin_views.job_action_view(self)), name=f"{prefix}_act"),
        ]
        return custom + super().get_urls()
