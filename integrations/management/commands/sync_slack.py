"""manage.py sync_slack: Slack history sync in the foreground, or enqueued with --async."""

from __future__ import annotations

from integrations.management.sync_command import SyncCommand
from integrations.slack import services as slack_services
from tickets.models import Organization


class Command(SyncCommand):
    help = "Sync Slack channel history into tickets (every organization, or --org SLUG)."
    source = "slack"
    every_organization = "every one with Slack"
    nothing_to_sync = "No organization has an enabled Slack workspace and channel."

    def sync_organization(self, organization: Organization) -> int:
        """Sync the organization's channels; errors are printed as warnings, not failures."""
        self.stdout.write(f"Syncing Slack for {organization.slug}")
        report = slack_services.slack_sync_organization(
            organization=organization, on_progress=self.progress_printer()
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
        return 0
