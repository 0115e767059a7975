from django.core.management.base import BaseCommand, CommandError

from audit.retention import audit_cleanup, audit_cleanup_schedule_next


class Command(BaseCommand):
    help = (
        "Delete audit events older than AUDIT_RETENTION_DAYS (keeping AUDIT_RETENTION_KEEP_ACTIONS), "
        "or with --schedule make sure the daily audit_cleanup job is scheduled."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, help="Override AUDIT_RETENTION_DAYS.")
        parser.add_argument(
            "--schedule", action="store_true", help="Only schedule the daily audit_cleanup job (idempotent) and exit."
        )

    def handle(self, *args, days=None, schedule=False, **options):
        if schedule:
            job = audit_cleanup_schedule_next()
            self.stdout.write(f"daily audit clean-up scheduled: job {job.pk} at {job.scheduled_for.isoformat()}")
            return
        if days is not None and days < 1:
            raise CommandError("--days must be at least 1.")
        report = audit_cleanup(retention_days=days)
        self.stdout.write(f"removed {report.deleted} audit event(s) older than {report.cutoff.isoformat()}")
