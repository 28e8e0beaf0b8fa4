"""`manage.py setup_periodic_tasks`: create the default schedules (idempotent)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from taskops import services


class Command(BaseCommand):
    help = (
        "Create the default periodic tasks (Slack and e-mail sync, cleanup, training, "
        "health heartbeat) that are missing; existing ones keep their admin edits."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="restore the defaults of schedules that exist (interval, task, enabled)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        outcome = services.periodic_tasks_setup(reset=options["reset"], log=self.stdout.write)
        self.stdout.write(
            self.style.SUCCESS(
                f"periodic tasks: {len(outcome['created'])} created, "
                f"{len(outcome['reset'])} reset, {len(outcome['kept'])} kept"
            )
        )
