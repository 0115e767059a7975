from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"
    default_auto_field = "django.db.models.BigAutoField"
    job_modules = ("chat.jobs",)

    def ready(self):
        from chat import checks  # noqa: F401  (registers system checks)
