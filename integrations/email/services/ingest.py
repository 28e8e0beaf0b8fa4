"""Ingestion: one message, one ledger row and its ticket or follow-up, in one transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from email.utils import parseaddr
from typing import Any, Literal

import structlog
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, InterfaceError, OperationalError, transaction

from integrations.email import selectors as email_selectors
from integrations.email.parsing import (
    Attachment,
    EmailParseError,
    ParsedEmail,
    ParseLimits,
    ParseTimeout,
    parse_message,
)
from integrations.email.services.lease import MailboxLeaseLost
from integrations.email.services.raw import raw_mail_store
from integrations.models import (
    EmailAttachment,
    InboundEmail,
    InboundEmailState,
    Mailbox,
)
from integrations.transactions import atomic_async_commit
from tickets.models import Source, Ticket
from tickets.services import ticket_create, ticket_create_many, ticket_message_create

logger = structlog.get_logger(__name__)
# Left unread on the server, for a person to look at.
_NOT_FLAGGED = frozenset({InboundEmailState.REJECTED, InboundEmailState.TOO_LARGE})


class AttachmentStorageError(Exception):
    """Attachments could not be written (disk full, storage down): stop and retry later."""


def email_message_key(message_id: str | None, raw: bytes) -> str:
    """The de-duplication key: the Message-ID, or a digest of the raw bytes when there is none."""
    if message_id:
        if len(message_id) <= 255:
            return message_id
        return "sha256:" + hashlib.sha256(message_id.encode("utf-8", "replace")).hexdigest()
    # Without a Message-ID only the bytes identify a message (the same copy re-uploaded
    # into a recreated folder has the same bytes).
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _requester(parsed: ParsedEmail) -> str:
    if parsed.from_name and parsed.from_address:
        return f"{parsed.from_name} <{parsed.from_address}>"[:255]
    return (parsed.from_address or parsed.from_name)[:255]


def _thread_ticket(
    *, organization_id: int, parsed: ParsedEmail, known: Mapping[str, Mapping[str, Any]]
) -> Ticket | None:
    """The ticket this mail answers: by In-Reply-To/References, else by a [#id] subject tag."""
    for message_id in parsed.thread_message_ids:
        ticket_id = (known.get(email_message_key(message_id, b"")) or {}).get("ticket_id")
        if ticket_id is not None:
            ticket = Ticket.objects.filter(pk=ticket_id, organization_id=organization_id).first()
            if ticket is not None:
                return ticket
    if parsed.ticket_tag is not None:
        ticket = Ticket.objects.filter(
            pk=parsed.ticket_tag, organization_id=organization_id
        ).first()
        if ticket is not None and _takes_part(ticket=ticket, address=parsed.from_address):
            return ticket
        if ticket is not None:
            # Anyone can type "[#42]": only the requester or someone already on the ticket
            # may add to it that way; a stranger's mail opens a ticket of its own.
            logger.info(
                "email_subject_tag_ignored",
                organization=organization_id,
                ticket_id=ticket.pk,
                reason="sender is not on the ticket",
            )
    return None


def _address_of(label: str) -> str:
    """The e-mail address in a requester or author label ("Name <addr>" or "addr")."""
    address = parseaddr(label)[1]
    return address.strip().casefold() if "@" in address else ""


def _takes_part(*, ticket: Ticket, address: str) -> bool:
    """Whether ``address`` is the ticket's requester or the author of one of its messages."""
    wanted = address.strip().casefold()
    if not wanted:
        return False
    if _address_of(ticket.requester) == wanted:
        return True
    authors = ticket.messages.filter(author__icontains=wanted).values_list("author", flat=True)
    return any(_address_of(author) == wanted for author in authors)


def _store_attachments(
    *, row: InboundEmail, ticket: Ticket | None, attachments: Sequence[Attachment]
) -> None:
    """Describe every attachment; store the ones within ZENITH_MAX_ATTACHMENT_BYTES."""
    limit = settings.ZENITH_MAX_ATTACHMENT_BYTES
    records = []
    for index, attachment in enumerate(attachments, start=1):
        record = EmailAttachment(
            inbound_email=row,
            ticket=ticket,
            filename=attachment.filename[:255],
            content_type=attachment.content_type[:255],
            size=attachment.size,
        )
        if attachment.size > limit:
            record.skipped_reason = (
                f"larger than ZENITH_MAX_ATTACHMENT_BYTES ({attachment.size} > {limit} bytes)"
            )
        else:
            name = f"{index}-{attachment.filename}"
            path = record.file.field.generate_filename(record, name)
            # A rolled-back attempt may have left this exact file: replace it, do not fork it.
            if record.file.storage.exists(path):
                record.file.storage.delete(path)
            record.file.save(name, ContentFile(attachment.payload), save=False)
        records.append(record)
    EmailAttachment.objects.bulk_create(records)


def _duplicate(
    *, row: InboundEmail, earlier: Mapping[str, Any] | None, ticket_id: int | None
) -> InboundEmail:
    row.state, row.ticket_id = InboundEmailState.DUPLICATE, ticket_id
    row.reason = "Message-ID already ingested"
    if earlier is None:
        earlier = email_selectors.inbound_email_by_keys(
            organization_id=row.organization_id, message_keys=[row.message_key]
        ).get(row.message_key)
    if earlier is not None:
        row.reason += (
            f" from mailbox {earlier['mailbox_id']} "
            f"(UIDVALIDITY {earlier['uidvalidity']}, UID {earlier['uid']})"
        )
    row.save()
    return row


class BatchConflict(Exception):
    """A batch met mail it cannot write together (seen before, or twice in the batch)."""


class EmailBatch:
    """The new tickets of one fetch batch, written together inside the caller's transaction:
    one look-up of their Message-IDs, one insert of the tickets, one of the ledger rows.

    Mail that answers a thread is written on its own, after what is pending (its thread may
    be in the batch). Anything seen before raises BatchConflict from ``flush``: the caller
    rolls the batch back and ingests it one message per transaction.
    """

    def __init__(self, *, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self._pending: list[tuple[InboundEmail, ParsedEmail]] = []

    def add(self, *, row: InboundEmail, parsed: ParsedEmail) -> None:
        row.state = InboundEmailState.TICKET
        self._pending.append((row, parsed))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        specs = [
            {
                "external_id": row.message_key,
                "subject": parsed.subject[:500],
                "body": parsed.body_text,
                "requester": _requester(parsed),
            }
            for row, parsed in pending
        ]
        created = ticket_create_many(
            organization=self.mailbox.organization, source=Source.EMAIL, tickets=specs
        )
        fresh = sum(1 for _, was_created in created.values() if was_created)
        if fresh != len(pending):
            raise BatchConflict(f"{len(pending) - fresh} of {len(pending)} mails seen before")
        for row, _ in pending:
            row.ticket = created[row.message_key][0]
        InboundEmail.objects.bulk_create([row for row, _ in pending])
        for row, parsed in pending:
            if parsed.attachments:
                _store_attachments(row=row, ticket=row.ticket, attachments=parsed.attachments)


def _ingest_parsed(
    *, row: InboundEmail, parsed: ParsedEmail, look_up: bool, batch: EmailBatch | None = None
) -> InboundEmail:
    """Decide what the mail becomes, create it and save the ledger row (inside a transaction).

    Without ``look_up`` nothing is read to find an earlier copy: the unique keys of the
    ticket (the Message-ID) and of the ledger refuse one, and the caller rolls back and
    retries with the look-up. Mail that names a thread is looked up either way. With a
    ``batch``, a new ticket is left to the batch (``EmailBatch.flush`` writes it).
    """
    if parsed.is_auto:
        row.state = InboundEmailState.BOUNCE if parsed.is_bounce else InboundEmailState.AUTO_REPLY
        row.reason = parsed.auto_reason[:1000]
        row.save()
        return row
    if batch is not None:
        if not parsed.thread_message_ids and parsed.ticket_tag is None and row.message_key:
            batch.add(row=row, parsed=parsed)
            return row
        batch.flush()
    organization_id = row.organization_id
    thread_keys = [email_message_key(message_id, b"") for message_id in parsed.thread_message_ids]
    known: dict[str, dict[str, Any]] = {}
    if look_up or thread_keys:
        # One query answers "seen this Message-ID before?" and "which ticket does it answer?".
        known = email_selectors.inbound_email_by_keys(
            organization_id=organization_id, message_keys=[row.message_key, *thread_keys]
        )
    earlier = known.get(row.message_key)
    if earlier is not None:
        return _duplicate(row=row, earlier=earlier, ticket_id=earlier["ticket_id"])
    requester = _requester(parsed)
    if_exists: Literal["return", "raise"] = "return" if look_up else "raise"
    ticket = _thread_ticket(organization_id=organization_id, parsed=parsed, known=known)
    if ticket is not None:
        message, created = ticket_message_create(
            ticket=ticket,
            source=Source.EMAIL,
            external_id=row.message_key,
            author=requester,
            body=parsed.body_text,
            if_exists=if_exists,
        )
        if not created:
            return _duplicate(row=row, earlier=None, ticket_id=ticket.pk)
        row.state, row.ticket, row.ticket_message = InboundEmailState.FOLLOWUP, ticket, message
    else:
        ticket, created = ticket_create(
            organization=row.organization,
            source=Source.EMAIL,
            external_id=row.message_key,
            subject=parsed.subject[:500],
            body=parsed.body_text,
            requester=requester,
            if_exists=if_exists,
        )
        if not created:
            return _duplicate(row=row, earlier=None, ticket_id=ticket.pk)
        row.state, row.ticket = InboundEmailState.TICKET, ticket
    row.save()
    _store_attachments(row=row, ticket=ticket, attachments=parsed.attachments)
    return row


def _new_row(
    *, mailbox: Mailbox, uidvalidity: int, uid: int, raw: bytes, parsed: ParsedEmail | None
) -> InboundEmail:
    row = InboundEmail(
        organization=mailbox.organization,
        mailbox=mailbox,
        uidvalidity=uidvalidity,
        uid=uid,
        size=min(len(raw), 2**31 - 1),
        # Nothing to keep for a message that was not downloaded (too_large).
        raw_file=raw_mail_store(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=raw)
        if raw
        else "",
    )
    if parsed is not None:
        row.message_id = (parsed.message_id or "")[:998]
        row.message_key = email_message_key(parsed.message_id, raw)
        row.subject = parsed.subject[:500]
        row.from_address = parsed.from_address[:320]
        row.sent_at = parsed.date
        row.body_truncated = parsed.body_truncated
    return row


def _ingested_elsewhere(*, mailbox: Mailbox, uidvalidity: int, uid: int) -> bool:
    return InboundEmail.objects.filter(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid).exists()


def _save_unless_taken(row: InboundEmail) -> None:
    """Save a ledger row; MailboxLeaseLost if another poll recorded that UID meanwhile."""
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError as exc:
        if _ingested_elsewhere(mailbox=row.mailbox, uidvalidity=row.uidvalidity, uid=row.uid):
            raise MailboxLeaseLost(
                f"mailbox {row.mailbox_id}: UID {row.uid} taken by another poll"
            ) from exc
        raise


def _reject(
    *,
    mailbox: Mailbox,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    parsed: ParsedEmail | None,
    reason: str,
) -> InboundEmail:
    """Record a message that cannot become a ticket; the poll goes on with the next one."""
    logger.warning(
        "email_rejected",
        organization=mailbox.organization_id,
        mailbox_id=mailbox.pk,
        uid=uid,
        reason=reason,
    )
    row = _new_row(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=raw, parsed=parsed)
    row.state, row.reason = InboundEmailState.REJECTED, reason[:2000]
    _save_unless_taken(row)
    return row


def email_parse_limits() -> ParseLimits:
    """The bounds of parsing one message, from settings."""
    return ParseLimits(
        max_html_chars=settings.ZENITH_MAX_HTML_BYTES,
        max_body_chars=settings.ZENITH_MAX_BODY_CHARS,
        seconds=settings.ZENITH_MAX_PARSE_SECONDS or None,
    )


def _headers_only(raw: bytes) -> ParsedEmail | None:
    """Subject, sender and Message-ID from the header block alone (small and quick)."""
    end = raw.find(b"\r\n\r\n", 0, 65536)
    end = raw.find(b"\n\n", 0, 65536) if end < 0 else end
    header = raw[: end if end >= 0 else 16384][:65536]
    try:
        return parse_message(header + b"\r\n\r\n", ParseLimits(seconds=0.5))
    except EmailParseError:
        return None


def email_record_too_large(
    *, mailbox: Mailbox, uidvalidity: int, uid: int, size: int, header: bytes
) -> InboundEmail:
    """Record a message over ZENITH_MAX_MESSAGE_BYTES without downloading it.

    ``header`` is its header block (``BODY.PEEK[HEADER.FIELDS (...)]``), so the row shows
    who sent what. The row moves the cursor past the message; the mail stays unread on the
    server for a person to look at.
    """
    limit = settings.ZENITH_MAX_MESSAGE_BYTES
    parsed = _headers_only(header) if header.strip() else None
    row = _new_row(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=b"", parsed=parsed)
    if parsed is not None and not parsed.message_id:
        row.message_key = ""
    row.size = min(size, 2**31 - 1)
    row.state = InboundEmailState.TOO_LARGE
    row.reason = (
        f"{size} bytes, over ZENITH_MAX_MESSAGE_BYTES ({limit} bytes): not downloaded; "
        "it is still in the mailbox"
    )
    logger.warning(
        "email_too_large",
        organization=mailbox.organization_id,
        mailbox_id=mailbox.pk,
        uid=uid,
        size=size,
        limit=limit,
    )
    _save_unless_taken(row)
    return row


def email_ingest(
    *, mailbox: Mailbox, uidvalidity: int, uid: int, raw: bytes, batch: EmailBatch | None = None
) -> InboundEmail:
    """Ingest one fetched message in one transaction: ledger row and ticket or follow-up.

    The ledger row is also the cursor (the highest UID with a row), so the cursor moves
    in the same commit. A row that already exists for this UID means another poll
    overlapped this one: MailboxLeaseLost, and this poll stops.

    With a ``batch`` the caller's transaction holds a whole fetch batch (new tickets are
    written by ``batch.flush``), and any error here (a Message-ID seen before, a lost race,
    a storage failure) propagates, so that the caller rolls the batch back and ingests it
    again one message per transaction.
    """
    if len(raw) > settings.ZENITH_MAX_MESSAGE_BYTES:
        # The server under-reported RFC822.SIZE: still, do not parse it.
        return email_record_too_large(
            mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, size=len(raw), header=raw[:16384]
        )
    try:
        parsed = parse_message(raw, email_parse_limits())
    except ParseTimeout as exc:
        return _reject(
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            uid=uid,
            raw=raw,
            parsed=_headers_only(raw),
            reason=f"{exc.reason} (ZENITH_MAX_PARSE_SECONDS); not converted",
        )
    except EmailParseError as exc:
        return _reject(
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            uid=uid,
            raw=raw,
            parsed=None,
            reason=f"unparseable: {exc.reason}",
        )
    if batch is not None:
        row = _new_row(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=raw, parsed=parsed)
        return _ingest_parsed(row=row, parsed=parsed, look_up=False, batch=batch)
    reason = ""
    # A second attempt follows a Message-ID seen before (or a race lost on it): it looks
    # the earlier copy up. Lost in a database crash, the row goes with the cursor (it is
    # the ledger) and the mail, not yet flagged, is fetched again: see _poll.
    for attempt in range(2):
        try:
            with atomic_async_commit():
                row = _new_row(
                    mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=raw, parsed=parsed
                )
                return _ingest_parsed(row=row, parsed=parsed, look_up=attempt > 0)
        except (OperationalError, InterfaceError):
            raise
        except OSError as exc:
            # The storage is failing, not the message: leave it unread for the next poll.
            raise AttachmentStorageError(f"UID {uid}: attachments not stored: {exc}") from exc
        except IntegrityError as exc:
            if _ingested_elsewhere(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid):
                raise MailboxLeaseLost(
                    f"mailbox {mailbox.pk}: UID {uid} was ingested by another poll"
                ) from exc
            # The first attempt does not look for an earlier copy: a conflict is expected.
            log = logger.info if attempt == 0 else logger.warning
            log(
                "email_store_conflict",
                mailbox_id=mailbox.pk,
                uid=uid,
                error=str(exc),
                attempt=attempt + 1,
            )
            reason = f"could not be stored: {exc}"
        except Exception as exc:  # one bad message must not stop the mailbox
            logger.exception("email_store_failed", mailbox_id=mailbox.pk, uid=uid)
            reason = f"could not be stored: {type(exc).__name__}: {exc}"
            break
    return _reject(
        mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=raw, parsed=parsed, reason=reason
    )
