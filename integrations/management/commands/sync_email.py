"""manage.py sync_email: poll IMAP mailboxes in the foreground, or enqueue with --async."""

from __future__ import annotations

from integrations.email import selectors as email_selectors
from integrations.email import services as email_services
from integrations.management.sync_command import SyncCommand
from tickets.models import Organization


class Command(SyncCommand):
    help = (
        "Turn new mail of enabled IMAP mailboxes into tickets (every organization, or --org SLUG)."
    )
    source = "email"
    every_organization = "every one with a mailbox"
    nothing_to_sync = "No organization has an enabled mailbox."
    failed_unit = "mailbox(es)"

    def sync_organization(self, organization: Organization) -> int:
        """Poll the organization's mailboxes; returns how many failed."""
        mailboxes = list(email_selectors.mailbox_list(organization=organization, enabled=True))
        self.stdout.write(f"Syncing e-mail for {organization.slug}: {len(mailboxes)} mailbox(es)")
        progress = self.progress_printer()
        failed = 0
        for mailbox in mailboxes:
            report = email_services.mailbox_poll(mailbox=mailbox, on_progress=progress)
            if report.busy:
                self.stdout.write(f"  {mailbox.name}: another poll is running, skipped")
            elif report.error:
                failed += 1
                self.stderr.write(
                    self.style.ERROR(f"  {mailbox.name}: {report.error_kind} error: {report.error}")
                )
            else:
                self.stdout.write(
                    self.style.SUCCESS(
                        f"  {mailbox.name}: {report.fetched} message(s): {report.ticket} new "
                        f"ticket(s), {report.followup} follow-up(s), {report.duplicate} "
                        f"duplicate(s), {report.auto_reply} auto-repl(ies), {report.bounce} "
                        f"bounce(s), {report.rejected} rejected, {report.too_large} too large"
                    )
                )
        return failed
