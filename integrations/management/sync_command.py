"""The skeleton of `manage.py sync_<source>`: foreground with progress, `--org SLUG`, `--async`."""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations import sync
from taskops.progress import ProgressCallback, no_progress
from tickets.management.progress import add_progress_argument, command_progress
from tickets.models import Organization


class SyncCommand(BaseCommand):
    """Sync one source of every organization that has it (or of `--org SLUG`).

    Organizations and `--async` enqueueing come from the source's entry in the sync
    registry (integrations/sync.py); a subclass names the source and prints its own report
    of a foreground sync in `sync_organization`.
    """

    source: ClassVar[str]  # a key of integrations.sync.SYNC_SOURCES
    every_organization: ClassVar[str]  # whom the default covers, for --help
    nothing_to_sync: ClassVar[str]  # printed when no organization has the source
    failed_unit: ClassVar[str] = "account(s)"
    on_progress: ProgressCallback = no_progress

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        sync.sync_source_get(cls.source)  # an unknown source fails at import, not at run time

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help=f"organization slug (default: {self.every_organization})")
        parser.add_argument(
            "--async",
            dest="run_async",
            action="store_true",
            help="enqueue the sync task(s) and print the task id(s) instead of waiting",
        )
        add_progress_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["org"]:
            organization = Organization.objects.filter(slug=options["org"]).first()
            if organization is None:
                raise CommandError(f"no organization with slug {options['org']!r}")
            organizations = [organization]
        else:
            organizations = list(sync.sync_source_organizations(self.source))
            if not organizations:
                self.stdout.write(self.nothing_to_sync)
                return
        failed = 0
        for organization in organizations:
            if options["run_async"]:
                task_id = sync.sync_source_enqueue(
                    source=self.source, organization=organization, triggered_by="system"
                )
                self.stdout.write(task_id if options["org"] else f"{organization.slug} {task_id}")
            else:
                with command_progress(self, options, f"{self.source} {organization.slug}") as cb:
                    self.on_progress = cb
                    failed += self.sync_organization(organization)
        if failed:
            raise CommandError(f"{failed} {self.failed_unit} could not be synced (see above)")

    def sync_organization(self, organization: Organization) -> int:
        """Sync one organization now, printing what happened; returns how many accounts failed."""
        raise NotImplementedError

    def progress_printer(self) -> ProgressCallback:
        """The running command's progress callback (a bar in a terminal, else plain lines)."""
        return self.on_progress
