"""Replies thread onto their ticket; one Message-ID is one ticket per organization."""

from __future__ import annotations

import pytest

from integrations.email.services import email_sync_organization, mailbox_poll
from integrations.models import InboundEmail, Mailbox
from tests.integrations.email.conftest import MakeMailbox, append_all, ledger, seen_uids
from tests.support import email_samples as samples
from tests.support.dovecot import DovecotServer, ImapAccount
from tests.tickets.factories import TicketFactory
from tickets.models import Organization, Ticket, TicketMessage

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


def new_account(server: DovecotServer, name: str) -> ImapAccount:
    username, password = server.add_user(name)
    return ImapAccount(server=server, username=username, password=password)


def test_reply_by_in_reply_to_becomes_a_follow_up(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    parent_id = samples.make_message_id()
    append_all(imap_account, [samples.plain("VPN is down", "It is down.\n", message_id=parent_id)])
    mailbox_poll(mailbox=mailbox)
    ticket = Ticket.objects.get()

    reply_id = samples.make_message_id()
    append_all(
        imap_account,
        [samples.reply(parent_message_id=parent_id, message_id=reply_id, body="Still down.\n")],
    )
    report = mailbox_poll(mailbox=mailbox)

    assert (report.ticket, report.followup) == (0, 1)
    assert Ticket.objects.count() == 1
    message = TicketMessage.objects.get()
    assert message.ticket == ticket
    assert (message.body, message.source, message.external_id) == ("Still down.", "email", reply_id)
    assert message.author == "Alice Customer <alice@example.com>"
    row = InboundEmail.objects.get(message_id=reply_id)
    assert (row.state, row.ticket, row.ticket_message) == ("followup", ticket, message)


def test_parent_and_reply_in_the_same_poll(mailbox: Mailbox, imap_account: ImapAccount) -> None:
    parent_id = samples.make_message_id()
    append_all(
        imap_account,
        [
            samples.plain("Laptop broken", message_id=parent_id),
            samples.reply(parent_message_id=parent_id),
            samples.reply(parent_message_id=parent_id, body="And again.\n"),
        ],
    )

    report = mailbox_poll(mailbox=mailbox)

    assert (report.ticket, report.followup) == (1, 2)
    ticket = Ticket.objects.get()
    assert list(ticket.messages.values_list("body", flat=True)) == [
        "Thanks, it is still burning.",
        "And again.",
    ]


def test_reply_to_a_follow_up_threads_onto_the_same_ticket(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    parent_id, first_reply_id = samples.make_message_id(), samples.make_message_id()
    append_all(
        imap_account,
        [
            samples.plain("Printer jam", message_id=parent_id),
            samples.reply(parent_message_id=parent_id, message_id=first_reply_id),
            # Only the follow-up is named: In-Reply-To and References both point at it.
            samples.reply(parent_message_id=first_reply_id, body="Third mail.\n"),
        ],
    )

    mailbox_poll(mailbox=mailbox)

    ticket = Ticket.objects.get()
    assert ticket.messages.count() == 2
    assert ticket.messages.last().body == "Third mail."


def test_subject_tag_threads_onto_a_ticket_of_the_same_organization(
    mailbox: Mailbox, imap_account: ImapAccount, other_organization: Organization
) -> None:
    ours = TicketFactory(
        organization=mailbox.organization,
        subject="Monitor flickers",
        requester=samples.DEFAULT_FROM,
    )
    theirs = TicketFactory(
        organization=other_organization, subject="Not yours", requester=samples.DEFAULT_FROM
    )
    append_all(imap_account, [samples.tagged(ours.pk), samples.tagged(theirs.pk)])

    report = mailbox_poll(mailbox=mailbox)

    assert (report.followup, report.ticket) == (1, 1)
    assert ours.messages.get().body == "Any news?"
    assert theirs.messages.count() == 0
    # Another organization's ticket number is just text: it opens a ticket of our own.
    new = Ticket.objects.get(source="email")
    assert new.organization == mailbox.organization
    assert new.subject == f"Re: [#{theirs.pk}] Printer is on fire"


def test_a_subject_tag_from_a_stranger_opens_a_new_ticket(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    """Typing "[#id]" is not enough: the sender must be the requester or already on it."""
    ticket = TicketFactory(
        organization=mailbox.organization,
        subject="Payroll export",
        requester="Bob Requester <bob@example.com>",
    )
    ticket.messages.create(source="email", author="Carol Colleague <CAROL@example.com>")
    append_all(
        imap_account,
        [
            samples.plain(
                f"Re: [#{ticket.pk}] Payroll export",
                "Send me the file.\n",
                from_="Mallory <mallory@evil.test>",
            ),
            samples.plain(
                f"Re: [#{ticket.pk}] Payroll export", "Bob here.\n", from_="bob@EXAMPLE.com"
            ),
            samples.plain(f"[#{ticket.pk}]", "Carol here.\n", from_="carol@example.com"),
        ],
    )

    report = mailbox_poll(mailbox=mailbox)

    assert (report.ticket, report.followup) == (1, 2)
    assert list(ticket.messages.exclude(body="").values_list("body", flat=True)) == [
        "Bob here.",
        "Carol here.",
    ]
    spoof = Ticket.objects.get(source="email")
    assert (spoof.requester, spoof.body) == ("Mallory <mallory@evil.test>", "Send me the file.")
    assert spoof.pk != ticket.pk
    row = InboundEmail.objects.get(ticket=spoof)
    assert row.state == "ticket"


def test_auto_reply_to_a_ticket_adds_nothing(mailbox: Mailbox, imap_account: ImapAccount) -> None:
    parent_id = samples.make_message_id()
    append_all(
        imap_account,
        [
            samples.plain("Need a new mouse", message_id=parent_id),
            samples.auto_reply(in_reply_to=parent_id),
        ],
    )

    report = mailbox_poll(mailbox=mailbox)

    assert (report.ticket, report.auto_reply, report.followup) == (1, 1, 0)
    assert TicketMessage.objects.count() == 0


def test_same_message_id_in_two_mailboxes_of_one_organization_is_one_ticket(
    make_mailbox: MakeMailbox, dovecot_server: DovecotServer, organization: Organization
) -> None:
    first, second = new_account(dovecot_server, "shared-a"), new_account(dovecot_server, "shared-b")
    raw = samples.plain("Sent to two addresses", message_id="<one-mail@example.com>")
    reply = samples.reply(parent_message_id="<one-mail@example.com>", message_id="<re@example.com>")
    append_all(first, [raw, reply])
    append_all(second, [raw, reply])
    mailbox_a, mailbox_b = make_mailbox(first), make_mailbox(second)

    reports = email_sync_organization(organization=organization)

    assert [(r.ticket, r.followup, r.duplicate) for r in reports] == [(1, 1, 0), (0, 0, 2)]
    ticket = Ticket.objects.get()
    assert ticket.external_id == "<one-mail@example.com>"
    assert ticket.messages.count() == 1
    rows_b = ledger(mailbox_b)
    assert {row.state for row in rows_b.values()} == {"duplicate"}
    assert {row.ticket for row in rows_b.values()} == {ticket}
    assert "from mailbox" in rows_b[1].reason
    # Duplicates are processed mail too: marked \Seen in both mailboxes.
    assert seen_uids(first) == seen_uids(second) == {1, 2}
    assert len(ledger(mailbox_a)) == 2


def test_same_message_id_in_two_organizations_is_a_ticket_in_each(
    make_mailbox: MakeMailbox,
    dovecot_server: DovecotServer,
    organization: Organization,
    other_organization: Organization,
) -> None:
    first, second = new_account(dovecot_server, "org-a"), new_account(dovecot_server, "org-b")
    raw = samples.plain("Both companies", message_id="<cc@example.com>")
    append_all(first, [raw])
    append_all(second, [raw])
    make_mailbox(first)
    make_mailbox(second, organization=other_organization)

    email_sync_organization(organization=organization)
    email_sync_organization(organization=other_organization)

    assert Ticket.objects.filter(external_id="<cc@example.com>").count() == 2
    assert set(Ticket.objects.values_list("organization__slug", flat=True)) == {"acme", "globex"}


def test_a_deleted_ticket_does_not_come_back_from_a_second_copy(
    make_mailbox: MakeMailbox, dovecot_server: DovecotServer, organization: Organization
) -> None:
    first, second = new_account(dovecot_server, "del-a"), new_account(dovecot_server, "del-b")
    raw = samples.plain("Spam that a person deleted", message_id="<deleted@example.com>")
    append_all(first, [raw])
    mailbox_poll(mailbox=make_mailbox(first))
    Ticket.objects.get().delete()
    append_all(second, [raw])

    report = mailbox_poll(mailbox=make_mailbox(second))

    assert (report.ticket, report.duplicate, report.rejected) == (0, 1, 0)
    assert Ticket.objects.count() == 0
