"""manage.py seed_demo: the demo organization, its tickets, a login and a token."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tickets.demo import demo_seed


class Command(BaseCommand):
    help = "Create the demo organization from the bundled dataset, a demo superuser and a token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--allow-production",
            action="store_true",
            help="seed even when DJANGO_DEBUG is off (creates a superuser with a public password)",
        )
        parser.add_argument(
            "--quiet",
            action="store_true",
            help="print the import summary only (make run prints the login last)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The demo login's password is published in the README: never on a real deployment
        # by accident.
        if not settings.DEBUG and not options["allow_production"]:
            raise CommandError(
                "seed_demo creates a superuser with a published password and runs only with "
                "DJANGO_DEBUG=1; pass --allow-production to seed anyway"
            )
        seed = demo_seed()
        self.stdout.write(
            f"organization {seed.organization.slug}: {seed.report.created} tickets imported, "
            f"{seed.report.existing} already present"
        )
        if options["quiet"]:
            return
        self.stdout.write(f"demo login: {seed.username} / {seed.password}")
        self.stdout.write(f"demo API token: {seed.token}")
