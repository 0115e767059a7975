import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections
from django.utils.module_loading import import_string
from redis.exceptions import RedisError

from queues.reconcile import queues_reconcile


class Command(BaseCommand):
    help = "Re-enqueue jobs Redis lost and recover jobs of dead workers (once, or --loop)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="Run every --interval seconds until stopped.")
        parser.add_argument("--interval", type=int, default=None)
        parser.add_argument("--passes", type=int, default=None, help="With --loop: stop after this many passes.")
        parser.add_argument("--grace", type=int, default=None, help="Seconds before a waiting job counts as lost.")

    def handle(self, *args, loop=False, interval=None, grace=None, passes=None, **options):
        interval = settings.RECONCILE_INTERVAL if interval is None else interval
        if interval < 1:
            raise CommandError("--interval must be at least 1 second.")
        if grace is not None and grace < 0:
            raise CommandError("--grace must not be negative.")
        if not loop:
            self.stdout.write(str(queues_reconcile(grace_seconds=grace)))
            return
        hooks = [import_string(path) for path in settings.PERIODIC_HOOKS]
        next_hooks = 0.0
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
        done = 0
        while not stop["now"] and (passes is None or done < passes):
            done += 1
            try:
                report = queues_reconcile(grace_seconds=grace)
                if report.requeued or report.recovered or report.released:
                    self.stdout.write(str(report))
                if time.monotonic() >= next_hooks:
                    for hook in hooks:
                        hook()
                    next_hooks = time.monotonic() + settings.PERIODIC_HOOKS_INTERVAL
            except (RedisError, OSError, DatabaseError) as exc:
                # Outages are what this loop exists for: keep going, the next pass catches up.
                self.stderr.write(f"reconcile pass failed: {exc}")
                close_old_connections()
            deadline = time.monotonic() + interval
            while not stop["now"] and time.monotonic() < deadline and (passes is None or done < passes):
                time.sleep(0.2)
