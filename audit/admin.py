"""Audit log in the admin: read-only for everyone (superusers included), plus chain verify and reports."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from audit.models import AuditChainGap, AuditLog
from audit.selectors import audit_chain_state
from queues.models import JobRecord
from slimy_site.exceptions import ApplicationError


class ReportForm(forms.Form):
    occurred_from = forms.DateTimeField(label="From (UTC)", help_text="e.g. 2025-01-01 00:00")
    occurred_to = forms.DateTimeField(label="To (UTC, exclusive)")

    def clean(self):
        super().clean()
        data = self.cleaned_data
        if data.get("occurred_from") and data.get("occurred_to") and data["occurred_from"] >= data["occurred_to"]:
            raise forms.ValidationError("'To' must be after 'From'.")
        return data


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        return {}


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "occurred_at",
        "action",
        "resource_type",
        "resource_id",
        "actor_label",
        "actor_ref",
        "success",
        "request_id",
    )
    list_filter = ("success", "action", "resource_type", ("occurred_at", admin.DateFieldListFilter))
    search_fields = ("=request_id", "=resource_id", "=resource_type", "=action")
    search_help_text = "Exact request id, resource id, resource type or action."
    date_hierarchy = "occurred_at"
    show_full_result_count = False  # a COUNT(*) over millions of rows on every page is not worth it
    list_per_page = 100
    ordering = ("-occurred_at", "-id")
    readonly_fields = [f.name for f in AuditLog._meta.fields]
    change_list_template = "admin/audit/auditlog/change_list.html"

    def get_urls(self):
        extra = [
            path("verify/", self.admin_site.admin_view(self.verify_view), name="audit_auditlog_verify"),
            path("report/", self.admin_site.admin_view(self.report_view), name="audit_auditlog_report"),
        ]
        return extra + super().get_urls()

    def verify_view(self, request):
        if not self.has_view_permission(request):
            return redirect("admin:index")
        report = audit_chain_state()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Audit chain",
            "report": report,
            "checked_at": timezone.now(),
        }
        return TemplateResponse(request, "admin/audit/verify.html", context)

    def report_view(self, request):
        if not self.has_view_permission(request):
            return redirect("admin:index")
        from queues.services import job_enqueue

        form = ReportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            payload = {
                "occurredFrom": form.cleaned_data["occurred_from"].isoformat(),
                "occurredTo": form.cleaned_data["occurred_to"].isoformat(),
            }
            try:
                job = job_enqueue(
                    job_type="audit_report",
                    payload=payload,
                    owner=request.user,
                    request_id=getattr(request, "request_id", None),
                )
            except ApplicationError as exc:
                messages.error(request, f"The report could not be started: {exc.message} {exc.details or ''}")
            else:
                messages.success(request, f"Report job {job.pk} started.")
                return redirect("admin:audit_auditlog_report")
        jobs = JobRecord.objects.filter(job_type="audit_report", owner=request.user).order_by("-created_at")[:20]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Audit reports",
            "form": form,
            "jobs": jobs,
            "download_base": reverse("audit-report-detail", kwargs={"job_id": "0"}).rsplit("/", 1)[0],
        }
        return TemplateResponse(request, "admin/audit/report.html", context)


@admin.register(AuditChainGap)
class AuditChainGapAdmin(ReadOnlyAdmin):
    list_display = ("after_id", "first_deleted_id", "last_deleted_id", "deleted_count", "created_at")
