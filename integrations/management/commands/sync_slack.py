"""manage.py sync_slack: Slack history sync in the foreground, or enqueued with --async."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations import slack_selectors, slack_services
from tickets.models import Organization


class Command(BaseCommand):
    help = "Sync Slack channel history into tickets (every organization, or --org SLUG)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="organization slug (default: every one with Slack)")
        parser.add_argument(
            "--async",
            dest="run_async",
            action="store_true",
            help="enqueue the sync task(s) and print the task id(s) instead of waiting",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["org"]:
            organization = Organization.objects.filter(slug=options["org"]).first()
            if organization is None:
                raise CommandError(f"no organization with slug {options['org']!r}")
            organizations = [organization]
        else:
            organizations = list(slack_selectors.slack_organizations_to_sync().order_by("slug"))
            if not organizations:
                self.stdout.write("No organization has an enabled Slack workspace and channel.")
                return
        for organization in organizations:
            if options["run_async"]:
                task_id = slack_services.slack_sync_enqueue(
                    organization=organization, triggered_by="system"
                )
                self.stdout.write(task_id if options["org"] else f"{organization.slug} {task_id}")
            else:
                self._sync(organization)

    def _sync(self, organization: Organization) -> None:
        self.stdout.write(f"Syncing Slack for {organization.slug}")

        def progress(done: int, total: int, message: str) -> None:
            self.stdout.write(f"  [{done}/{total}] {message}")

        report = slack_services.slack_sync_organization(
            organization=organization, on_progress=progress
        )
        counts = report.as_dict()
        self.stdout.write(
            self.style.SUCCESS(
                f"{organization.slug}: {counts['channels']} channel(s), {counts['pages']} page(s), "
                f"{counts['seen']} message(s) read, {counts['tickets']} new ticket(s), "
                f"{counts['replies']} new repl(ies), {counts['edited']} edited, "
                f"{counts['deleted']} deleted"
            )
        )
        for error in report.errors:
            where = error.get("workspace") or error.get("channel")
            self.stderr.write(self.style.WARNING(f"  error in {where}: {error['error']}"))
