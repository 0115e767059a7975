from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"
    default_auto_field = "django.db.models.BigAutoField"
    job_modules = ("audit.jobs",)

    def ready(self):
        from audit.receivers import connect_receivers

        connect_receivers()
