"""What each kind of real-world mail becomes, fetched from a real Dovecot by a real poll."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from integrations.email.services import mailbox_poll
from integrations.models import EmailAttachment, InboundEmail, Mailbox
from tests.integrations.email.conftest import append_all, ledger, seen_uids
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tickets.models import Ticket

pytestmark = [pytest.mark.dovecot, pytest.mark.django_db]


@pytest.fixture
def all_ingested(mailbox: Mailbox, imap_account: ImapAccount) -> dict[str, InboundEmail]:
    """Every sample of tests/support/email_samples.py APPENDed and polled once, by name."""
    raws = samples.all_samples()
    uids = dict(zip(raws, append_all(imap_account, raws.values()), strict=True))
    report = mailbox_poll(mailbox=mailbox)
    assert report.error == ""
    rows = ledger(mailbox)
    return {name: rows[uid] for name, uid in uids.items()}


def ticket_of(rows: dict[str, InboundEmail], name: str) -> Ticket:
    row = rows[name]
    assert row.state == "ticket", (name, row.state, row.reason)
    assert row.ticket is not None
    return row.ticket


def test_every_sample_is_ingested_once_and_marked_seen(
    all_ingested: dict[str, InboundEmail], mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    states = {name: row.state for name, row in all_ingested.items()}
    assert states.pop("bounce") == "bounce"
    assert states.pop("auto_reply") == "auto_reply"
    assert set(states.values()) == {"ticket"}
    assert Ticket.objects.filter(organization=mailbox.organization, source="email").count() == 17
    # Every processed message is \Seen, none is deleted, and the cursor is at the last UID.
    assert seen_uids(imap_account) == {row.uid for row in all_ingested.values()}
    assert len(imap_account.messages()) == 19
    mailbox.refresh_from_db()
    assert mailbox.last_uid == max(row.uid for row in all_ingested.values())
    assert mailbox.last_success_at is not None
    assert mailbox.last_error == ""


def test_plain_message(all_ingested: dict[str, InboundEmail]) -> None:
    ticket = ticket_of(all_ingested, "plain")
    assert ticket.subject == "Printer is on fire"
    assert ticket.body == "Hello,\n\nthe printer on floor 3 is on fire.\n\nAlice"
    assert ticket.requester == "Alice Customer <alice@example.com>"
    assert ticket.source == "email"
    # The Message-ID is the ticket's external id: the same mail can never open a second one.
    assert ticket.external_id == all_ingested["plain"].message_id
    assert ticket.external_id.startswith("<")
    assert ticket.external_id.endswith(">")


def test_html_only_message_becomes_readable_text(all_ingested: dict[str, InboundEmail]) -> None:
    body = ticket_of(all_ingested, "html_only").body
    assert "Hello **team** & friends," in body
    assert "[the status page](https://status.example.com)" in body
    assert "Café \u2013 ok" in body
    for markup in ("<p>", "<b>", "alert(", "color: red"):
        assert markup not in body


def test_multipart_alternative_prefers_the_plain_part(
    all_ingested: dict[str, InboundEmail],
) -> None:
    assert ticket_of(all_ingested, "alternative").body == "Plain version wins."


def test_attachments_are_stored_with_name_type_and_size(
    all_ingested: dict[str, InboundEmail],
) -> None:
    ticket = ticket_of(all_ingested, "with_attachments")
    assert ticket.body == "See the attached files."
    stored = {a.filename: a for a in EmailAttachment.objects.filter(ticket=ticket)}
    assert set(stored) == {"report.pdf", "screenshot.png"}
    pdf, png = stored["report.pdf"], stored["screenshot.png"]
    assert (pdf.content_type, pdf.size) == ("application/pdf", len(samples.PDF_BYTES))
    assert (png.content_type, png.size) == ("image/png", len(samples.PNG_BYTES))
    assert pdf.skipped_reason == ""
    assert png.skipped_reason == ""
    with pdf.file.open("rb") as handle:
        assert handle.read() == samples.PDF_BYTES
    with png.file.open("rb") as handle:
        assert handle.read() == samples.PNG_BYTES


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("latin1", samples.LATIN1_TEXT),
        ("koi8r", samples.KOI8R_TEXT),
        ("shift_jis", samples.SHIFT_JIS_TEXT),
        ("ascii_declared_utf8_body", samples.UTF8_TEXT),
        ("ascii_declared_latin1_body", "Café crème, s'il vous plaît."),
        ("unknown_charset", samples.UTF8_TEXT),
    ],
)
def test_bodies_in_other_and_wrongly_declared_charsets(
    all_ingested: dict[str, InboundEmail], name: str, text: str
) -> None:
    assert ticket_of(all_ingested, name).body == text


def test_invalid_utf8_is_replaced_not_fatal(all_ingested: dict[str, InboundEmail]) -> None:
    body = ticket_of(all_ingested, "broken_utf8").body
    assert body.startswith("Valid start, broken ")
    assert "\ufffd" in body
    assert body.endswith("end.")


def test_rfc2047_encoded_subject_and_sender(all_ingested: dict[str, InboundEmail]) -> None:
    ticket = ticket_of(all_ingested, "encoded_subject")
    assert ticket.subject == samples.ENCODED_SUBJECT
    assert ticket.requester == "Jörg Müller, Support <JOERG@example.de>"


def test_raw_8bit_headers(all_ingested: dict[str, InboundEmail]) -> None:
    ticket = ticket_of(all_ingested, "raw_8bit_headers")
    assert ticket.subject == "Grüße, ошибка & 故障"
    assert ticket.requester == "Jörg Müller <joerg@example.de>"
    assert ticket.body == "Körper."


def test_message_without_message_id_is_keyed_by_its_content(
    all_ingested: dict[str, InboundEmail],
) -> None:
    row = all_ingested["no_message_id"]
    ticket = ticket_of(all_ingested, "no_message_id")
    assert row.message_id == ""
    assert row.message_key.startswith("sha256:")
    assert ticket.external_id == row.message_key
    assert ticket.body == "Where did my id go?"


def test_no_subject_and_no_body(all_ingested: dict[str, InboundEmail]) -> None:
    no_subject = ticket_of(all_ingested, "no_subject")
    assert (no_subject.subject, no_subject.body) == ("", "Subject? Never heard of it.")
    empty = ticket_of(all_ingested, "no_body")
    assert (empty.subject, empty.body) == ("Empty", "")


def test_bounce_and_auto_reply_are_recorded_but_open_no_ticket(
    all_ingested: dict[str, InboundEmail],
) -> None:
    bounce, auto = all_ingested["bounce"], all_ingested["auto_reply"]
    assert (bounce.state, bounce.ticket) == ("bounce", None)
    assert "delivery-status" in bounce.reason
    assert (auto.state, auto.ticket) == ("auto_reply", None)
    assert "auto-replied" in auto.reason
    subjects = set(Ticket.objects.values_list("subject", flat=True))
    assert "Undelivered Mail Returned to Sender" not in subjects
    assert "Out of office: Printer is on fire" not in subjects


def test_tag_of_an_unknown_ticket_opens_a_new_ticket(
    all_ingested: dict[str, InboundEmail],
) -> None:
    assert ticket_of(all_ingested, "tagged").subject == "Re: [#42] Printer is on fire"


@override_settings(ZENITH_MAX_ATTACHMENT_BYTES=1000)
def test_attachment_over_the_limit_is_recorded_as_skipped(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    big = bytes(range(256)) * 40  # 10,240 bytes
    small = b"x" * 1000  # exactly at the limit: kept
    append_all(
        imap_account,
        [
            samples.with_attachments(
                attachments=[
                    ("dump.bin", "application/octet-stream", big),
                    ("note.txt", "text/plain", small),
                ]
            ),
            samples.plain("after the big one"),
        ],
    )

    report = mailbox_poll(mailbox=mailbox)

    assert (report.ticket, report.rejected) == (2, 0)
    dump = EmailAttachment.objects.get(filename="dump.bin")
    assert dump.size == len(big)
    assert dump.stored is False
    assert "ZENITH_MAX_ATTACHMENT_BYTES" in dump.skipped_reason
    note = EmailAttachment.objects.get(filename="note.txt")
    assert note.stored
    assert note.skipped_reason == ""
    assert note.ticket == dump.ticket
    assert seen_uids(imap_account) == {1, 2}


def test_unparseable_message_is_rejected_and_the_sync_goes_on(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    uids = append_all(
        imap_account,
        [samples.plain("before"), b"this is not an e-mail at all\r\n", samples.plain("after")],
    )

    report = mailbox_poll(mailbox=mailbox)

    rows = ledger(mailbox)
    assert [rows[uid].state for uid in uids] == ["ticket", "rejected", "ticket"]
    assert "no header fields" in rows[uids[1]].reason
    assert (report.ticket, report.rejected, report.error) == (2, 1, "")
    assert set(Ticket.objects.values_list("subject", flat=True)) == {"before", "after"}
    # Rejected mail stays unread in the mailbox for a person to look at.
    assert seen_uids(imap_account) == {uids[0], uids[2]}
    # ... and is not retried by the next poll.
    assert mailbox_poll(mailbox=mailbox).fetched == 0


def test_failing_attachment_storage_stops_the_poll_and_loses_nothing(
    mailbox: Mailbox, imap_account: ImapAccount, settings: object, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the media directory should be")
    settings.MEDIA_ROOT = str(blocker)  # type: ignore[attr-defined]
    uids = append_all(
        imap_account, [samples.plain("first"), samples.with_attachments(), samples.plain("third")]
    )

    report = mailbox_poll(mailbox=mailbox)

    assert report.error_kind == "storage"
    assert report.transient
    # Every message's original is stored too (raw mail), so the very first one stops the
    # poll: rolled back with nothing after it, all left unread for the next poll.
    assert ledger(mailbox) == {}
    assert not Ticket.objects.exists()
    assert seen_uids(imap_account) == set()
    mailbox.refresh_from_db()
    assert mailbox.last_error_kind == "storage"

    settings.MEDIA_ROOT = str(tmp_path / "media")  # type: ignore[attr-defined]
    report = mailbox_poll(mailbox=mailbox)

    assert report.error == ""
    assert Ticket.objects.count() == 3
    assert EmailAttachment.objects.filter(file__gt="").count() == 2
    assert seen_uids(imap_account) == set(uids)


def test_ticket_api_shows_the_mail_and_its_attachments(
    all_ingested: dict[str, InboundEmail], make_api_client: Any, user: Any
) -> None:
    ticket = ticket_of(all_ingested, "with_attachments")

    response = make_api_client(user).get(f"/api/v1/tickets/{ticket.pk}")

    assert response.status_code == 200
    email = response.json()["email"]
    assert email["message_id"] == all_ingested["with_attachments"].message_id
    assert [
        (a["filename"], a["content_type"], a["size"], a["stored"]) for a in email["attachments"]
    ] == [
        ("report.pdf", "application/pdf", len(samples.PDF_BYTES), True),
        ("screenshot.png", "image/png", len(samples.PNG_BYTES), True),
    ]
    listed = make_api_client(user).get("/api/v1/tickets/").json()["results"]
    assert all("email" in item for item in listed)
