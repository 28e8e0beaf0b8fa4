"""The poll of a mailbox: cursor, UIDVALIDITY, flags, moves, lease and failures."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.email import services as email_services
from integrations.email.services import (
    email_sync_organization_summary,
    mailbox_lease_acquire,
    mailbox_lease_release,
    mailbox_poll,
)
from integrations.email.services import poll as email_poll
from integrations.models import InboundEmail, Mailbox
from integrations.sync import organization_sync
from taskops.base import TransientError
from tests.integrations.email.conftest import PROCESSED, MakeMailbox, append_all, ledger, seen_uids
from tests.support import email_samples as samples
from tests.support.dovecot import DovecotServer, ImapAccount
from tickets.models import Organization, Ticket

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


def plains(count: int, prefix: str = "Message") -> list[bytes]:
    return [samples.plain(f"{prefix} {i}", f"Body {i}.\n") for i in range(count)]


def test_second_poll_fetches_only_new_mail(mailbox: Mailbox, imap_account: ImapAccount) -> None:
    append_all(imap_account, plains(3))
    assert mailbox_poll(mailbox=mailbox).ticket == 3
    assert mailbox_poll(mailbox=mailbox).fetched == 0

    append_all(imap_account, plains(2, "Later"))
    report = mailbox_poll(mailbox=mailbox)

    assert (report.fetched, report.ticket) == (2, 2)
    assert Ticket.objects.count() == 5
    mailbox.refresh_from_db()
    assert mailbox.last_uid == 5


def test_uidvalidity_change_imports_nothing_twice(
    make_mailbox: MakeMailbox, imap_account: ImapAccount
) -> None:
    mailbox = make_mailbox(imap_account, folder="Support")
    raws = [*plains(4), samples.no_message_id()]
    append_all(imap_account, raws, folder="Support")
    assert mailbox_poll(mailbox=mailbox).ticket == 5
    old_validity = imap_account.uidvalidity("Support")

    # The folder is deleted and recreated with the same messages (and one new one).
    imap_account.delete_folder("Support")
    imap_account.create_folder("Support")
    append_all(imap_account, [*raws, samples.plain("Brand new")], folder="Support")
    assert imap_account.uidvalidity("Support") != old_validity

    report = mailbox_poll(mailbox=mailbox)

    assert report.uidvalidity_changed
    assert (report.fetched, report.duplicate, report.ticket) == (6, 5, 1)
    assert Ticket.objects.count() == 6
    mailbox.refresh_from_db()
    assert (mailbox.uidvalidity, mailbox.last_uid) == (imap_account.uidvalidity("Support"), 6)
    assert seen_uids(imap_account, "Support") == {1, 2, 3, 4, 5, 6}
    # The rescan's duplicates point at the tickets the first copies opened.
    firsts = InboundEmail.objects.filter(uidvalidity=old_validity)
    seconds = InboundEmail.objects.filter(uidvalidity=mailbox.uidvalidity, state="duplicate")
    assert {r.ticket_id for r in firsts} == {r.ticket_id for r in seconds}


def test_processed_folder_receives_the_mail_and_nothing_is_deleted(
    make_mailbox: MakeMailbox, imap_account: ImapAccount
) -> None:
    mailbox = make_mailbox(imap_account, processed_folder=PROCESSED)
    raws = [*plains(3), b"not a message\r\n", samples.auto_reply()]
    append_all(imap_account, raws)

    report = mailbox_poll(mailbox=mailbox)

    assert (report.ticket, report.rejected, report.auto_reply, report.flagged) == (3, 1, 1, 4)
    moved = imap_account.messages(PROCESSED)
    assert sorted(moved.values()) == sorted(raws[:3] + raws[4:])
    # Only the rejected message stays in the inbox, unread.
    left = imap_account.messages("INBOX")
    assert list(left.values()) == [raws[3]]
    assert seen_uids(imap_account) == set()
    assert mailbox_poll(mailbox=mailbox).fetched == 0


def test_messages_committed_but_not_flagged_are_flagged_by_the_next_poll(
    mailbox: Mailbox, imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Progress is reported once a batch is committed: the crash comes after the first
    # batch's commit, before the server is told.
    monkeypatch.setattr(email_poll, "FETCH_BATCH_MESSAGES", 3)
    append_all(imap_account, plains(6))

    def crash_after_three(done: int, total: int, message: str) -> None:
        if done == 3:
            raise KeyboardInterrupt("worker killed")

    with pytest.raises(KeyboardInterrupt):
        mailbox_poll(mailbox=mailbox, on_progress=crash_after_three)

    # Three rows are committed; the server has not been told about any of them yet.
    assert sorted(ledger(mailbox)) == [1, 2, 3]
    assert all(row.flagged_at is None for row in ledger(mailbox).values())
    assert seen_uids(imap_account) == set()

    report = mailbox_poll(mailbox=mailbox)

    assert (report.fetched, report.ticket, report.flagged) == (3, 3, 6)
    assert Ticket.objects.count() == 6
    assert seen_uids(imap_account) == {1, 2, 3, 4, 5, 6}
    assert all(row.flagged_at is not None for row in ledger(mailbox).values())


def test_mail_is_flagged_batch_by_batch_as_the_poll_goes(
    mailbox: Mailbox, imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(email_poll, "FETCH_BATCH_MESSAGES", 3)
    monkeypatch.setattr(email_poll, "SIZE_LOOKAHEAD", 4)
    append_all(imap_account, plains(8))

    def crash_at_six(done: int, total: int, message: str) -> None:
        if done == 6:
            raise KeyboardInterrupt("worker killed")

    with pytest.raises(KeyboardInterrupt):
        mailbox_poll(mailbox=mailbox, on_progress=crash_at_six)

    # The first batch (UIDs 1-3) was flagged after its commit; the second (4-6) is
    # committed only (progress is reported after a batch's commit, before its flags).
    assert seen_uids(imap_account) == {1, 2, 3}
    assert sorted(ledger(mailbox)) == [1, 2, 3, 4, 5, 6]
    assert mailbox_poll(mailbox=mailbox).ticket == 2
    assert seen_uids(imap_account) == set(range(1, 9))

    # A batch is also cut by size: one message at a time when each exceeds the budget.
    monkeypatch.setattr(email_poll, "FETCH_BATCH_BYTES", 1)
    append_all(imap_account, plains(3, "Big"))

    def crash_at_second(done: int, total: int, message: str) -> None:
        if done == 2:
            raise KeyboardInterrupt("worker killed")

    with pytest.raises(KeyboardInterrupt):
        mailbox_poll(mailbox=mailbox, on_progress=crash_at_second)
    assert seen_uids(imap_account) == set(range(1, 10))  # UID 9 was a batch of its own
    assert mailbox_poll(mailbox=mailbox).ticket == 1
    assert Ticket.objects.count() == 11


def test_a_move_that_reached_the_server_before_the_crash_is_not_an_error(
    make_mailbox: MakeMailbox, imap_account: ImapAccount
) -> None:
    mailbox = make_mailbox(imap_account, processed_folder=PROCESSED)
    append_all(imap_account, plains(3))
    mailbox_poll(mailbox=mailbox)
    # As if the poll had died between the MOVE and noting it in the ledger.
    InboundEmail.objects.update(flagged_at=None)

    report = mailbox_poll(mailbox=mailbox)

    assert (report.error, report.fetched, report.flagged) == ("", 0, 3)
    assert len(imap_account.messages(PROCESSED)) == 3
    assert not InboundEmail.objects.filter(flagged_at__isnull=True).exists()


def test_wrong_password_is_recorded_and_the_other_mailbox_is_still_synced(
    make_mailbox: MakeMailbox,
    dovecot_server: DovecotServer,
    organization: Organization,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    good_user = dovecot_server.add_user("good")
    bad_user = dovecot_server.add_user("bad")
    good = ImapAccount(dovecot_server, *good_user)
    bad = ImapAccount(dovecot_server, *bad_user)
    append_all(good, plains(2))
    append_all(bad, plains(2))
    broken = make_mailbox(bad, name="Broken", password="not-the-password")
    working = make_mailbox(good, name="Working")

    summary = email_sync_organization_summary(organization=organization)

    broken.refresh_from_db()
    working.refresh_from_db()
    assert broken.last_error_kind == "auth"
    assert "AUTHENTICATIONFAILED" in broken.last_error
    assert broken.last_error_at is not None
    assert broken.last_success_at is None
    assert working.last_error == ""
    assert working.last_success_at is not None
    assert summary["ticket"] == 2
    assert summary["errors"] == [{"mailbox": "Broken", "kind": "auth", "error": broken.last_error}]
    assert Ticket.objects.count() == 2
    assert InboundEmail.objects.filter(mailbox=broken).count() == 0
    assert "not-the-password" not in caplog.text

    # Fixing the password clears the error on the next poll.
    email_services.mailbox_update(mailbox=broken, data={"password": bad.password})
    assert mailbox_poll(mailbox=broken).ticket == 2
    broken.refresh_from_db()
    assert (broken.last_error, broken.last_error_kind, broken.last_error_at) == ("", "", None)


def test_unreachable_server_is_transient_and_retried(
    make_mailbox: MakeMailbox, imap_account: ImapAccount
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    mailbox = make_mailbox(imap_account, port=closed_port)

    report = mailbox_poll(mailbox=mailbox)

    assert report.transient
    assert report.error_kind == "transient"
    with pytest.raises(TransientError, match="network error"):
        email_services.mailbox_poll_summary(mailbox=mailbox)
    # Through the registry shared with Slack as well (the task then retries).
    with pytest.raises(TransientError):
        organization_sync(organization=mailbox.organization, sources=["email"])
    mailbox.refresh_from_db()
    assert mailbox.last_error_kind == "transient"


def test_starttls_refused_by_the_server_never_falls_back_to_plain_text(
    make_mailbox: MakeMailbox, imap_account: ImapAccount
) -> None:
    append_all(imap_account, plains(1))
    # This Dovecot has ssl = no: it offers no STARTTLS.
    mailbox = make_mailbox(imap_account, security="starttls")
    log_path = imap_account.server.log_path
    log_before = len(log_path.read_text(errors="replace"))

    report = mailbox_poll(mailbox=mailbox)

    assert report.error_kind == "tls"
    assert "STARTTLS" in report.error
    assert InboundEmail.objects.count() == 0
    # Dovecot saw the connection end without any authentication attempt.
    deadline = time.monotonic() + 10
    while "no auth attempts" not in (log := log_path.read_text(errors="replace")[log_before:]):
        assert time.monotonic() < deadline, log
        time.sleep(0.05)
    assert f"Login: user=<{imap_account.username}>" not in log


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_sync_over_tls_verifies_the_certificate(
    make_mailbox: MakeMailbox, dovecot_tls_server: DovecotServer, settings: object, security: str
) -> None:
    username, password = dovecot_tls_server.add_user(f"tls-{security}")
    account = ImapAccount(dovecot_tls_server, username, password)
    append_all(account, plains(2))
    port = dovecot_tls_server.imaps_port if security == "ssl" else dovecot_tls_server.port
    mailbox = make_mailbox(account, security=security, port=port)

    # A self-signed certificate is refused...
    report = mailbox_poll(mailbox=mailbox)
    assert report.error_kind == "tls"
    assert "certificate verify failed" in report.error

    # ... until its CA is trusted through ZENITH_IMAP_CA_FILE.
    settings.ZENITH_IMAP_CA_FILE = str(dovecot_tls_server.ca_file)  # type: ignore[attr-defined]
    report = mailbox_poll(mailbox=mailbox)
    assert (report.error, report.ticket) == ("", 2)


def test_a_running_poll_keeps_a_second_one_off_the_mailbox(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    append_all(imap_account, plains(2))
    owner = mailbox_lease_acquire(mailbox=mailbox)
    assert owner is not None

    report = mailbox_poll(mailbox=mailbox)

    assert report.busy
    assert report.fetched == 0
    assert mailbox_lease_acquire(mailbox=mailbox) is None
    mailbox_lease_release(mailbox=mailbox, owner=owner)
    assert mailbox_poll(mailbox=mailbox).ticket == 2
    mailbox.refresh_from_db()
    assert mailbox.sync_lease_owner == ""


def test_the_lease_of_a_dead_poll_is_taken_over_at_once(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    append_all(imap_account, plains(1))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    far = timezone.now() + timedelta(hours=1)
    Mailbox.objects.filter(pk=mailbox.pk).update(
        sync_lease_owner=f"{socket.gethostname()}:{dead.pid}:crashed", sync_lease_expires_at=far
    )

    assert mailbox_poll(mailbox=mailbox).ticket == 1


def test_the_lease_of_a_poll_on_another_host_lapses_only_when_it_expires(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    append_all(imap_account, plains(1))
    Mailbox.objects.filter(pk=mailbox.pk).update(
        sync_lease_owner="other-host:1:abc",
        sync_lease_expires_at=timezone.now() + timedelta(minutes=5),
    )
    assert mailbox_poll(mailbox=mailbox).busy

    Mailbox.objects.filter(pk=mailbox.pk).update(
        sync_lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert mailbox_poll(mailbox=mailbox).ticket == 1


def test_a_mailbox_keeps_its_folder_once_mail_was_ingested(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    append_all(imap_account, plains(3, "Elsewhere"), folder="Other")
    # Before any mail arrived a wrong folder can still be fixed...
    email_services.mailbox_update(mailbox=mailbox, data={"folder": "Other"})
    assert mailbox_poll(mailbox=mailbox).ticket == 3

    # ... afterwards another folder is another mailbox: its UIDs would mean other mail.
    with pytest.raises(email_services.MailboxLocationLocked, match="folder"):
        email_services.mailbox_update(mailbox=mailbox, data={"folder": "INBOX"})
    with pytest.raises(email_services.MailboxLocationLocked, match="host"):
        email_services.mailbox_update(mailbox=mailbox, data={"host": "imap.example.net"})
    mailbox.refresh_from_db()
    assert mailbox.folder == "Other"
    # Everything else stays editable.
    email_services.mailbox_update(mailbox=mailbox, data={"name": "Renamed", "enabled": False})
    mailbox.refresh_from_db()
    assert (mailbox.name, mailbox.enabled, mailbox.last_uid) == ("Renamed", False, 3)


def test_a_batch_with_a_repeated_message_id_still_makes_every_other_mail_a_ticket(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    # One fetch batch: the third mail repeats the first one's Message-ID and the fourth
    # answers the second (its thread is in the same batch, not yet written).
    mails = [
        samples.plain("VPN down", message_id="<a@acme.test>"),
        samples.plain("Printer jam", message_id="<b@acme.test>"),
        samples.plain("VPN down", message_id="<a@acme.test>"),
        samples.plain("Re: Printer jam", message_id="<c@acme.test>", in_reply_to="<b@acme.test>"),
        samples.plain("Monitor flickers", message_id="<d@acme.test>"),
    ]
    append_all(imap_account, mails)

    report = mailbox_poll(mailbox=mailbox)

    assert (report.ticket, report.duplicate, report.followup, report.flagged) == (3, 1, 1, 5)
    assert sorted(Ticket.objects.values_list("subject", flat=True)) == [
        "Monitor flickers",
        "Printer jam",
        "VPN down",
    ]
    rows = ledger(mailbox)
    assert [rows[uid].state for uid in sorted(rows)] == [
        "ticket",
        "ticket",
        "duplicate",
        "followup",
        "ticket",
    ]
    assert rows[4].ticket_id == rows[2].ticket_id
    assert seen_uids(imap_account) == {1, 2, 3, 4, 5}
    # Nothing twice on the next poll.
    assert mailbox_poll(mailbox=mailbox).fetched == 0
    assert Ticket.objects.count() == 3


def test_a_clean_batch_writes_every_mail_with_its_own_ledger_row_and_attachments(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    append_all(
        imap_account,
        [*plains(4), samples.with_attachments(subject="Screenshot attached")],
    )

    report = mailbox_poll(mailbox=mailbox)

    assert (report.ticket, report.flagged) == (5, 5)
    rows = ledger(mailbox)
    assert sorted(rows) == [1, 2, 3, 4, 5]
    assert {row.state for row in rows.values()} == {"ticket"}
    tickets = {t.pk: t for t in Ticket.objects.all()}
    assert sorted(t.subject for t in tickets.values())[-1] == "Screenshot attached"
    assert len({row.ticket_id for row in rows.values()}) == 5
    assert set(tickets) == {row.ticket_id for row in rows.values()}
    attached = rows[5]
    assert attached.attachments.count() == 2
    assert {a.ticket_id for a in attached.attachments.all()} == {attached.ticket_id}
