"""manage.py sync_all: every source (Slack, e-mail) of every organization, or of --org SLUG."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations import sync
from tickets.management.progress import add_progress_argument, command_progress
from tickets.models import Organization


class Command(BaseCommand):
    help = (
        "Sync every source of every organization that has one (or --org SLUG), as the task "
        "integrations.tasks.sync_organization_data does; --async enqueues that task instead."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="organization slug (default: every one with a source)")
        parser.add_argument(
            "--source",
            action="append",
            choices=sorted(sync.SYNC_SOURCES),
            help="only this source (repeatable; default: all)",
        )
        parser.add_argument(
            "--async",
            dest="run_async",
            action="store_true",
            help="enqueue sync_organization_data and print the task id(s) instead of waiting",
        )
        add_progress_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        sources = options["source"]
        if options["org"]:
            organization = Organization.objects.filter(slug=options["org"]).first()
            if organization is None:
                raise CommandError(f"no organization with slug {options['org']!r}")
            organizations = [organization]
        else:
            organizations = list(sync.organizations_to_sync(sources=sources))
            if not organizations:
                self.stdout.write("No organization has an enabled mailbox or Slack channel.")
                return
        failed = 0
        for organization in organizations:
            if options["run_async"]:
                task_id = sync.organization_sync_enqueue(
                    organization=organization, sources=sources, triggered_by="system"
                )
                self.stdout.write(task_id if options["org"] else f"{organization.slug} {task_id}")
                continue
            self.stdout.write(f"Syncing {organization.slug}")
            try:
                with command_progress(self, options, f"sync {organization.slug}") as progress:
                    results = sync.organization_sync(
                        organization=organization, sources=sources, on_progress=progress
                    )
            except Exception as exc:
                failed += 1
                self.stderr.write(self.style.ERROR(f"{organization.slug}: {exc}"))
                continue
            self.stdout.write(
                self.style.SUCCESS(f"{organization.slug}: {json.dumps(results, default=str)}")
            )
        if failed:
            raise CommandError(f"{failed} organization(s) could not be synced (see above)")
