"""manage.py seed_demo: the demo organization, its tickets, a login and a token."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tickets.demo import demo_seed


class Command(BaseCommand):
    help = "Create the demo organization from the bundled dataset, a demo superuser and a token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--quiet",
            action="store_true",
            help="print the import summary only (make run prints the login last)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        seed = demo_seed()
        self.stdout.write(
            f"organization {seed.organization.slug}: {seed.report.created} tickets imported, "
            f"{seed.report.existing} already present"
        )
        if options["quiet"]:
            return
        self.stdout.write(f"demo login: {seed.username} / {seed.password}")
        self.stdout.write(f"demo API token: {seed.token}")
