from django.apps import AppConfig


class SlimySiteConfig(AppConfig):
    name = "slimy_site"
    verbose_name = "Slimy site"

    def ready(self):
        from slimy_site import checks  # noqa: F401  (registers the system checks)
        from slimy_site.authentication import connect_token_cache_signals
        from slimy_site.roles import connect_role_cache_signals

        connect_role_cache_signals()
        connect_token_cache_signals()
