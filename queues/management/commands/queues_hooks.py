from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string

from queues.workers.liveness import hooks_run


class Command(BaseCommand):
    help = "Run the periodic hooks (PERIODIC_HOOKS) once: what a runtime worker starts every PERIODIC_HOOKS_INTERVAL."

    def handle(self, *args, **options):
        failed = hooks_run([import_string(path) for path in settings.PERIODIC_HOOKS])
        if failed:
            self.stderr.write(f"{failed} periodic hook(s) failed; see the log")
