from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_state


class Command(BaseCommand):
    help = "Walk the audit hash chain; exit non-zero and name the first altered, inserted or removed row."

    def handle(self, *args, **options):
        report = audit_chain_state()
        if not report.ok:
            raise CommandError(
                f"audit chain BROKEN ({report.kind}) at row {report.row_id}: {report.message} "
                f"[{report.checked} row(s) verified before it]"
            )
        self.stdout.write(
            f"audit chain OK: {report.checked} row(s), {report.gaps} retention checkpoint(s), head #{report.head_id}"
        )
