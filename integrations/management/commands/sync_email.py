"""manage.py sync_email: poll IMAP mailboxes in the foreground, or enqueue with --async."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations import email_selectors, email_services
from tickets.models import Organization

# Foreground progress lines are printed at most this often (plus the last one).
PROGRESS_INTERVAL = 1.0


class Command(BaseCommand):
    help = (
        "Turn new mail of enabled IMAP mailboxes into tickets (every organization, or --org SLUG)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", help="organization slug (default: every one with a mailbox)")
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
            organizations = list(email_selectors.organizations_with_mailboxes())
            if not organizations:
                self.stdout.write("No organization has an enabled mailbox.")
                return
        failed = 0
        for organization in organizations:
            if options["run_async"]:
                task_id = email_services.email_sync_enqueue(organization=organization)
                self.stdout.write(task_id if options["org"] else f"{organization.slug} {task_id}")
            else:
                failed += self._sync(organization)
        if failed:
            raise CommandError(f"{failed} mailbox(es) could not be synced (see above)")

    def _sync(self, organization: Organization) -> int:
        """Poll the organization's mailboxes; returns how many failed."""
        mailboxes = list(email_selectors.mailbox_list(organization=organization, enabled=True))
        self.stdout.write(f"Syncing e-mail for {organization.slug}: {len(mailboxes)} mailbox(es)")
        last_print = 0.0

        def progress(done: int, total: int, message: str) -> None:
            nonlocal last_print
            now = time.monotonic()
            if done == total or now - last_print >= PROGRESS_INTERVAL:
                last_print = now
                self.stdout.write(f"  [{done}/{total}] {message}")

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
                        f"bounce(s), {report.rejected} rejected"
                    )
                )
        return failed
