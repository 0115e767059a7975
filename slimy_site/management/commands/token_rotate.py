"""`manage.py token_rotate <username>`: replace a user's API token (the old one stops working)."""

from django.core.management.base import BaseCommand, CommandError

from slimy_site.exceptions import ApplicationError
from slimy_site.services import token_revoke, token_rotate


class Command(BaseCommand):
    help = "Replace a user's API token and print the new one; --revoke deletes it without a replacement."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--revoke", action="store_true", help="Delete the token; issue no new one.")

    def handle(self, *args, username, revoke, **options):
        if revoke:
            if not token_revoke(username=username):
                raise CommandError(f"{username!r} has no token (or does not exist).")
            self.stderr.write(f"Revoked the token of {username}.")
            return
        try:
            key = token_rotate(username=username)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"New API token for {username}:")
        self.stdout.write(key)
