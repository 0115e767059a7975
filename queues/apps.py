from django.apps import AppConfig


class QueuesConfig(AppConfig):
    name = "queues"
    verbose_name = "Jobs and queues"
    default_auto_field = "django.db.models.BigAutoField"
    job_modules = ("queues.jobs",)

    def ready(self):
        from queues import checks  # noqa: F401  (registers system checks)
        from queues.metrics import connect_receivers

        connect_receivers()
