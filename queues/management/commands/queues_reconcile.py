import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from redis.exceptions import RedisError


class Command(BaseCommand):
    help = "Re-enqueue jobs Redis lost and recover jobs of dead workers (once, or --loop)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="Run every --interval seconds until stopped.")
        parser.add_argument("--interval", type=int, default=None)
        parser.add_argument("--grace", type=int, default=None, help="Seconds before a waiting job counts as lost.")

    def handle(self, *args, loop=False, interval=None, grace=None, **options):
        from django.db import DatabaseError, close_old_connections

        from queues.reconcile import queues_reconcile

        interval = settings.RECONCILE_INTERVAL if interval is None else interval
        if interval < 1:
            raise CommandError("--interval must be at least 1 second.")
        if grace is not None and grace < 0:
            raise CommandError("--grace must not be negative.")
        if not loop:
            self.stdout.write(str(queues_reconcile(grace_seconds=grace)))
            return
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
        while not stop["now"]:
            try:
                report = queues_reconcile(grace_seconds=grace)
                if report.requeued or report.recovered:
                    self.stdout.write(str(report))
            except (RedisError, OSError, DatabaseError) as exc:
                # Outages are what this loop exists for: keep going, the next pass catches up.
                self.stderr.write(f"reconcile pass failed: {exc}")
                close_old_connections()
            deadline = time.monotonic() + interval
            while not stop["now"] and time.monotonic() < deadline:
                time.sleep(0.2)
