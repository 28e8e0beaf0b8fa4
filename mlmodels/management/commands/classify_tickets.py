"""manage.py classify_tickets: predict unclassified tickets (foreground, or --async)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from mlmodels import services
from mlmodels.management.commands._common import organizations_for
from mlmodels.registry import ArtifactError
from taskops.services import task_enqueue
from tickets.management.progress import add_progress_argument, command_progress


class Command(BaseCommand):
    help = "Classify every ticket the active models have not classified yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", default=None, help="organization slug (default: all)")
        parser.add_argument(
            "--async", dest="run_async", action="store_true", help="enqueue and print the task id"
        )
        add_progress_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        for organization in organizations_for(options["org"]):
            if options["run_async"]:
                task_id = task_enqueue(
                    name=services.BATCH_CLASSIFY_TASK,
                    kwargs={"organization_id": organization.pk},
                    triggered_by="command:classify_tickets",
                )
                self.stdout.write(f"{organization.slug}: classification queued as task {task_id}")
                continue
            self.stdout.write(f"{organization.slug}:")
            try:
                with command_progress(self, options, "classify") as progress:
                    report = services.tickets_classify(
                        organization=organization, on_progress=progress
                    )
            except ArtifactError as exc:
                raise CommandError(str(exc)) from exc
            if report.skipped:
                self.stdout.write(self.style.WARNING(f"  skipped: {report.skipped}"))
                continue
            versions = ", ".join(
                f"{target} v{number}" for target, number in report.versions.items()
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"  {report.tickets} tickets classified with {versions}: {report.applied} "
                    f"labels set, {report.needs_review} flagged for review"
                )
            )
