"""`manage.py user_add <username> --role member|club|staff|service`: create an API user, print its token."""

from django.core.management.base import BaseCommand, CommandError

from slimy_site.exceptions import ApplicationError
from slimy_site.roles import Role
from slimy_site.services import user_create


class Command(BaseCommand):
    help = "Create a user with a role and print its API token (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)
        parser.add_argument("--email", default="")

    def handle(self, *args, username, role, email, **options):
        try:
            user, key = user_create(username=username, role=role, email=email)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"Created {user.get_username()} ({role}). API token:")
        self.stdout.write(key)
