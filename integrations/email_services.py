"""E-mail ingestion: mailbox configuration, polls, and the ledger that makes each mail count once.

One message reads as a straight line: UID FETCH BODY.PEEK[] -> ``parse_message`` -> one
transaction holding its ``InboundEmail`` row, the ticket or follow-up, the attachments
and the advanced cursor -> after that commit, ``\\Seen`` or a move on the server.
Nothing is ever deleted from a mailbox.

Crash safety: the cursor is the ledger (the highest UID with a row), so it moves inside
each message's own transaction, and a poll killed at any point leaves every committed
message behind it and every other one ahead of it. A committed message whose flag did
not reach the server (``flagged_at`` is empty) is flagged at the start of the next poll.
The per-message commits are asynchronous (integrations.transactions); a batch is flagged
only after a synchronous commit has made them durable. The ledger's unique keys
(mailbox, UIDVALIDITY, UID and, per organization, the Message-ID) keep a retried or
overlapping poll, a new UIDVALIDITY or a second mailbox from creating anything twice.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import structlog
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from integrations import email_selectors
from integrations.clients.imap import (
    ConnectionTestResult,
    ImapError,
    ImapMailbox,
    MailboxConfig,
    test_connection,
)
from integrations.crypto import DecryptionError
from integrations.email_parsing import Attachment, EmailParseError, ParsedEmail, parse_message
from integrations.models import (
    EmailAttachment,
    InboundEmail,
    InboundEmailState,
    Mailbox,
)
from integrations.transactions import atomic_async_commit
from taskops.base import TransientError
from taskops.services import task_enqueue
from tickets.models import Organization, Source, Ticket
from tickets.services import ticket_create, ticket_message_create

logger = structlog.get_logger(__name__)

SYNC_MAILBOX_TASK = "integrations.tasks.sync_mailbox_task"
MANUAL_SYNC_TASK = "integrations.tasks.manual_sync_trigger"

# A fetch batch holds at most this many messages, and this many bytes beyond its first
# message, so a mailbox full of large attachments does not fill the worker's memory.
FETCH_BATCH_MESSAGES = 100
FETCH_BATCH_BYTES = 32 * 1024 * 1024
# UIDs whose sizes are asked for at once when planning the batches.
SIZE_LOOKAHEAD = 1000

# Where the mail lives. UIDs only mean something within one folder of one account, so
# once mail was ingested these are fixed: another folder is another mailbox.
MAILBOX_LOCATION_FIELDS = ("host", "username", "folder")
_CONFIG_FIELDS = (
    "name",
    "host",
    "port",
    "security",
    "username",
    "folder",
    "processed_folder",
    "enabled",
)
_HOSTNAME = socket.gethostname()
_NOT_FLAGGED = frozenset({InboundEmailState.REJECTED})

ProgressCallback = Callable[[int, int, str], None]


class MailboxLeaseLost(Exception):
    """Another poll took this mailbox over (ours was presumed dead); stop without committing."""


class MailboxLocationLocked(ValueError):
    """Host, username or folder of a mailbox that already ingested mail cannot change."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            f"{', '.join(fields)} cannot change once mail was ingested from this folder; "
            "add another mailbox instead (the ledger keeps mail from being ingested twice)"
        )
        self.fields = fields


class AttachmentStorageError(Exception):
    """Attachments could not be written (disk full, storage down): stop and retry later."""


# ------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------


def mailbox_create(
    *,
    organization: Organization,
    name: str,
    host: str,
    username: str,
    password: str,
    port: int = 993,
    security: str = "ssl",
    folder: str = "INBOX",
    processed_folder: str = "",
    enabled: bool = True,
) -> Mailbox:
    """Add a mailbox to poll; the password is stored encrypted."""
    return Mailbox.objects.create(
        organization=organization,
        name=name,
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        folder=folder,
        processed_folder=processed_folder,
        enabled=enabled,
    )


def mailbox_update(*, mailbox: Mailbox, data: Mapping[str, Any]) -> Mailbox:
    """Change a mailbox's settings; a new password replaces the old one, an empty one keeps it.

    Host, username and folder may only change until the first mail is ingested
    (MailboxLocationLocked): the ledger's UIDs belong to that one folder.
    """
    moved = [
        name
        for name in MAILBOX_LOCATION_FIELDS
        if name in data and data[name] != getattr(mailbox, name)
    ]
    if moved and email_selectors.mailbox_has_ingested(mailbox=mailbox):
        raise MailboxLocationLocked(moved)
    changed: list[str] = []
    for name in _CONFIG_FIELDS:
        if name in data and data[name] != getattr(mailbox, name):
            setattr(mailbox, name, data[name])
            changed.append(name)
    if data.get("password"):
        mailbox.password = data["password"]
        changed.append("password")
    if moved:
        mailbox.uidvalidity, mailbox.last_uid = None, 0
        changed += ["uidvalidity", "last_uid"]
    if changed:
        mailbox.save(update_fields=[*changed, "updated_at"])
    return mailbox


def mailbox_credentials_rotate(*, organization: Organization | None = None) -> int:
    """Re-encrypt stored passwords with the first of ZENITH_FIELD_KEYS; returns the count.

    Run it after putting a new key first; the old key can be dropped afterwards.
    """
    count = 0
    for mailbox in email_selectors.mailbox_list(organization=organization).exclude(password=""):
        # Loading decrypts with any key; saving encrypts with the first one.
        Mailbox.objects.filter(pk=mailbox.pk).update(password=mailbox.password)
        count += 1
    return count


def _ssl_context() -> ssl.SSLContext:
    """A verifying context; ZENITH_IMAP_CA_FILE adds a private CA to the system's ones."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if settings.ZENITH_IMAP_CA_FILE:
        context.load_verify_locations(cafile=settings.ZENITH_IMAP_CA_FILE)
    return context


def mailbox_config(*, mailbox: Mailbox) -> MailboxConfig:
    """What the IMAP client needs to reach the mailbox (decrypts the password)."""
    return MailboxConfig(
        host=mailbox.host,
        port=mailbox.port,
        security=mailbox.security,  # type: ignore[arg-type]
        username=mailbox.username,
        password=mailbox.password,
        folder=mailbox.folder,
        processed_folder=mailbox.processed_folder or None,
        timeout=settings.ZENITH_IMAP_TIMEOUT,
        ssl_context=_ssl_context() if mailbox.security != "none" else None,
    )


def mailbox_test_connection(*, mailbox: Mailbox) -> ConnectionTestResult:
    """Log in and look at the folders without changing anything on the server."""
    try:
        config = mailbox_config(mailbox=mailbox)
    except (DecryptionError, ValueError) as exc:
        return ConnectionTestResult(ok=False, error_kind="config", error=str(exc))
    return test_connection(config)


# ------------------------------------------------------------------------------
# Lease: one poll per mailbox at a time
# ------------------------------------------------------------------------------


def _lease_ttl() -> timedelta:
    return timedelta(seconds=settings.ZENITH_MAILBOX_LEASE_SECONDS)


def _process_running(pid: int) -> bool:
    """Whether pid is a live (not zombie) process on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # A killed worker whose parent died too may linger as a zombie nobody reaps.
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _owner_is_dead(owner: str) -> bool:
    """Whether a lease owner ("host:pid:token") is provably gone: a dead process on this host."""
    host, _, rest = owner.partition(":")
    pid, _, _token = rest.partition(":")
    if host != _HOSTNAME or not pid.isdigit():
        return False
    return int(pid) != os.getpid() and not _process_running(int(pid))


def mailbox_lease_acquire(*, mailbox: Mailbox) -> str | None:
    """Take the mailbox's poll lease; returns the owner token, or None when a live poll holds it.

    A conditional UPDATE, so it works the same on PostgreSQL and SQLite. A lease whose
    holder died on this host is taken over at once; elsewhere it lapses after
    ZENITH_MAILBOX_LEASE_SECONDS without a commit.
    """
    owner = f"{_HOSTNAME}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    now = timezone.now()
    claim = {"sync_lease_owner": owner, "sync_lease_expires_at": now + _lease_ttl()}
    free = Q(sync_lease_owner="") | Q(sync_lease_expires_at__lt=now)
    if Mailbox.objects.filter(free, pk=mailbox.pk).update(**claim):
        return owner
    holder = (
        Mailbox.objects.filter(pk=mailbox.pk).values_list("sync_lease_owner", flat=True).first()
    )
    if (
        holder
        and _owner_is_dead(holder)
        and Mailbox.objects.filter(pk=mailbox.pk, sync_lease_owner=holder).update(**claim)
    ):
        logger.warning("mailbox_lease_taken_over", mailbox_id=mailbox.pk, previous_owner=holder)
        return owner
    return None


def mailbox_lease_release(*, mailbox: Mailbox, owner: str) -> None:
    """Give the lease back (only if it is still ours)."""
    Mailbox.objects.filter(pk=mailbox.pk, sync_lease_owner=owner).update(
        sync_lease_owner="", sync_lease_expires_at=None
    )


def _lease_renew(*, mailbox: Mailbox, owner: str, **changes: Any) -> None:
    """Extend the lease (and write ``changes``) or raise MailboxLeaseLost when it is not ours."""
    updated = Mailbox.objects.filter(pk=mailbox.pk, sync_lease_owner=owner).update(
        sync_lease_expires_at=timezone.now() + _lease_ttl(), **changes
    )
    if not updated:
        raise MailboxLeaseLost(f"mailbox {mailbox.pk}: another poll took over")


# ------------------------------------------------------------------------------
# One message
# ------------------------------------------------------------------------------


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
        return Ticket.objects.filter(pk=parsed.ticket_tag, organization_id=organization_id).first()
    return None


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


def _ingest_parsed(*, row: InboundEmail, parsed: ParsedEmail, look_up: bool) -> InboundEmail:
    """Decide what the mail becomes, create it and save the ledger row (inside a transaction).

    Without ``look_up`` nothing is read to find an earlier copy: the unique keys of the
    ticket (the Message-ID) and of the ledger refuse one, and the caller rolls back and
    retries with the look-up. Mail that names a thread is looked up either way.
    """
    if parsed.is_auto:
        row.state = InboundEmailState.BOUNCE if parsed.is_bounce else InboundEmailState.AUTO_REPLY
        row.reason = parsed.auto_reason[:1000]
        row.save()
        return row
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
    )
    if parsed is not None:
        row.message_id = (parsed.message_id or "")[:998]
        row.message_key = email_message_key(parsed.message_id, raw)
        row.subject = parsed.subject[:500]
        row.from_address = parsed.from_address[:320]
        row.sent_at = parsed.date
    return row


def _ingested_elsewhere(*, mailbox: Mailbox, uidvalidity: int, uid: int) -> bool:
    return InboundEmail.objects.filter(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid).exists()


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
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError as exc:
        if _ingested_elsewhere(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid):
            raise MailboxLeaseLost(
                f"mailbox {mailbox.pk}: UID {uid} taken by another poll"
            ) from exc
        raise
    return row


def email_ingest(*, mailbox: Mailbox, uidvalidity: int, uid: int, raw: bytes) -> InboundEmail:
    """Ingest one fetched message in one transaction: ledger row and ticket or follow-up.

    The ledger row is also the cursor (the highest UID with a row), so the cursor moves
    in the same commit. A row that already exists for this UID means another poll
    overlapped this one: MailboxLeaseLost, and this poll stops.
    """
    try:
        parsed = parse_message(raw)
    except EmailParseError as exc:
        return _reject(
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            uid=uid,
            raw=raw,
            parsed=None,
            reason=f"unparseable: {exc.reason}",
        )
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


# ------------------------------------------------------------------------------
# One mailbox
# ------------------------------------------------------------------------------


@dataclass
class MailboxSyncReport:
    """What one poll of a mailbox did; JSON-serialisable through ``as_dict``."""

    mailbox_id: int
    mailbox: str
    busy: bool = False
    uidvalidity_changed: bool = False
    fetched: int = 0
    ticket: int = 0
    followup: int = 0
    duplicate: int = 0
    auto_reply: int = 0
    bounce: int = 0
    rejected: int = 0
    flagged: int = 0
    error: str = ""
    error_kind: str = ""
    transient: bool = False

    def count(self, state: str) -> None:
        setattr(self, state, getattr(self, state) + 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fetch_batches(imap: ImapMailbox, uids: Sequence[int]) -> Iterator[list[int]]:
    """Split uids into batches bounded by FETCH_BATCH_MESSAGES and FETCH_BATCH_BYTES.

    Sizes are asked for a slice at a time, so a huge first poll starts ingesting at once.
    """
    batch: list[int] = []
    size = 0
    for start in range(0, len(uids), SIZE_LOOKAHEAD):
        chunk = uids[start : start + SIZE_LOOKAHEAD]
        sizes = imap.sizes(chunk)
        for uid in chunk:
            message_size = sizes.get(uid, 0)
            if batch and (
                len(batch) >= FETCH_BATCH_MESSAGES or size + message_size > FETCH_BATCH_BYTES
            ):
                yield batch
                batch, size = [], 0
            batch.append(uid)
            size += message_size
    if batch:
        yield batch


def _flag(
    *,
    imap: ImapMailbox,
    mailbox: Mailbox,
    uidvalidity: int,
    uids: list[int],
    report: MailboxSyncReport,
) -> None:
    """Mark committed messages \\Seen (or move them to the processed folder), then note it."""
    if not uids:
        return
    if mailbox.processed_folder:
        imap.move(uids, mailbox.processed_folder)
    else:
        imap.mark_seen(uids)
    now = timezone.now()
    for start in range(0, len(uids), 500):
        InboundEmail.objects.filter(
            mailbox=mailbox, uidvalidity=uidvalidity, uid__in=uids[start : start + 500]
        ).update(flagged_at=now)
    report.flagged += len(uids)


def _cursor_start(
    *, mailbox: Mailbox, owner: str, uidvalidity: int, report: MailboxSyncReport
) -> int:
    """The last UID ingested under the server's UIDVALIDITY (0 when it is new)."""
    mailbox.refresh_from_db(fields=["uidvalidity"])
    if mailbox.uidvalidity is not None and mailbox.uidvalidity != uidvalidity:
        # The folder was recreated or renumbered: old UIDs mean nothing now. Every message
        # is read again and the Message-ID ledger recognizes the ones already ingested.
        logger.warning(
            "mailbox_uidvalidity_changed",
            mailbox_id=mailbox.pk,
            previous=mailbox.uidvalidity,
            uidvalidity=uidvalidity,
        )
        report.uidvalidity_changed = True
    last_uid = email_selectors.inbound_email_last_uid(mailbox=mailbox, uidvalidity=uidvalidity)
    _lease_renew(mailbox=mailbox, owner=owner, uidvalidity=uidvalidity, last_uid=last_uid)
    mailbox.uidvalidity, mailbox.last_uid = uidvalidity, last_uid
    return last_uid


def _poll(
    *,
    mailbox: Mailbox,
    owner: str,
    report: MailboxSyncReport,
    on_progress: ProgressCallback | None,
) -> None:
    config = mailbox_config(mailbox=mailbox)
    with ImapMailbox(config) as imap:
        uidvalidity = imap.select()
        last_uid = _cursor_start(
            mailbox=mailbox, owner=owner, uidvalidity=uidvalidity, report=report
        )
        # Committed by an earlier poll that died before it could flag them (and durable:
        # _cursor_start's synchronous commit flushed the WAL past their commits).
        pending = email_selectors.inbound_email_unflagged_uids(
            mailbox=mailbox, uidvalidity=uidvalidity
        )
        _flag(imap=imap, mailbox=mailbox, uidvalidity=uidvalidity, uids=pending, report=report)
        uids = imap.uids_after(last_uid)
        total, done = len(uids), 0
        if on_progress is not None:
            on_progress(0, total, f"{mailbox.name}: {total} new message(s)")
        for batch in _fetch_batches(imap, uids):
            raws = imap.fetch(batch)
            # Checked before every batch's commits, so a poll presumed dead stops early.
            _lease_renew(mailbox=mailbox, owner=owner)
            to_flag: list[int] = []
            for uid in batch:
                raw = raws.get(uid)
                if raw is None:
                    continue  # expunged since the search: nothing to ingest
                row = email_ingest(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=raw)
                logger.info(
                    "email_ingested",
                    organization=mailbox.organization_id,
                    mailbox_id=mailbox.pk,
                    uid=uid,
                    state=row.state,
                    ticket_id=row.ticket_id,
                    inbound_email_id=row.pk,
                )
                report.fetched += 1
                report.count(row.state)
                last_uid = uid
                if row.state not in _NOT_FLAGGED:
                    to_flag.append(uid)
                done += 1
                if on_progress is not None:
                    on_progress(done, total, f"{mailbox.name}: {done}/{total} message(s)")
            # A synchronous commit: it makes the batch's asynchronous ones durable too (the
            # WAL is flushed in order). Only then, every row of the batch committed for
            # good, does the server hear of it.
            _lease_renew(mailbox=mailbox, owner=owner, last_uid=last_uid)
            _flag(imap=imap, mailbox=mailbox, uidvalidity=uidvalidity, uids=to_flag, report=report)


def _record_outcome(*, mailbox: Mailbox, report: MailboxSyncReport) -> None:
    now = timezone.now()
    changes: dict[str, Any] = {"last_polled_at": now}
    if report.error:
        changes.update(
            last_error=report.error, last_error_kind=report.error_kind, last_error_at=now
        )
    else:
        changes.update(last_success_at=now, last_error="", last_error_kind="", last_error_at=None)
    Mailbox.objects.filter(pk=mailbox.pk).update(**changes)
    for name, value in changes.items():
        setattr(mailbox, name, value)


def mailbox_poll(
    *, mailbox: Mailbox, on_progress: ProgressCallback | None = None
) -> MailboxSyncReport:
    """Ingest the new mail of one mailbox; returns what happened (``busy`` if a poll runs already).

    IMAP and configuration failures are recorded on the mailbox and in the report, not
    raised; database errors propagate (the task retries them).
    """
    report = MailboxSyncReport(mailbox_id=mailbox.pk, mailbox=mailbox.name)
    owner = mailbox_lease_acquire(mailbox=mailbox)
    if owner is None:
        report.busy = True
        return report
    try:
        _poll(mailbox=mailbox, owner=owner, report=report, on_progress=on_progress)
    except ImapError as exc:
        report.error, report.error_kind, report.transient = str(exc), exc.kind, exc.retryable
        logger.warning(
            "mailbox_poll_failed", mailbox_id=mailbox.pk, error_kind=exc.kind, error=str(exc)
        )
    except AttachmentStorageError as exc:
        report.error, report.error_kind, report.transient = str(exc), "storage", True
        logger.error(
            "mailbox_poll_failed", mailbox_id=mailbox.pk, error_kind="storage", error=str(exc)
        )
    except (DecryptionError, ValueError) as exc:
        report.error, report.error_kind = str(exc), "config"
        logger.warning(
            "mailbox_poll_failed", mailbox_id=mailbox.pk, error_kind="config", error=str(exc)
        )
    except MailboxLeaseLost as exc:
        report.busy = True
        logger.warning("mailbox_poll_stopped", mailbox_id=mailbox.pk, reason=str(exc))
        return report
    finally:
        mailbox_lease_release(mailbox=mailbox, owner=owner)
    _record_outcome(mailbox=mailbox, report=report)
    logger.info(
        "mailbox_polled",
        organization=mailbox.organization_id,
        mailbox_id=mailbox.pk,
        fetched=report.fetched,
        tickets=report.ticket,
        followups=report.followup,
        error_kind=report.error_kind,
    )
    return report


def mailbox_poll_summary(
    *, mailbox: Mailbox, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """``mailbox_poll`` as a JSON summary; raises TransientError so the task retries later."""
    report = mailbox_poll(mailbox=mailbox, on_progress=on_progress)
    if report.transient:
        raise TransientError(f"mailbox {mailbox.pk} ({mailbox.name}): {report.error}")
    return report.as_dict()


# ------------------------------------------------------------------------------
# Organizations and tasks
# ------------------------------------------------------------------------------


def email_sync_organization(
    *, organization: Organization, on_progress: ProgressCallback | None = None
) -> list[MailboxSyncReport]:
    """Poll every enabled mailbox of an organization; one failing mailbox does not stop the rest."""
    reports = []
    for mailbox in email_selectors.mailbox_list(organization=organization, enabled=True):
        reports.append(mailbox_poll(mailbox=mailbox, on_progress=on_progress))
    return reports


def email_sync_organization_summary(
    *, organization: Organization, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """The "email" entry of the sync registry: a JSON summary, TransientError to retry later."""
    reports = email_sync_organization(organization=organization, on_progress=on_progress)
    summary: dict[str, Any] = {"mailboxes": [report.as_dict() for report in reports]}
    for state in InboundEmailState.values:
        summary[state] = sum(getattr(report, state) for report in reports)
    summary["errors"] = [
        {"mailbox": report.mailbox, "kind": report.error_kind, "error": report.error}
        for report in reports
        if report.error
    ]
    transient = [report for report in reports if report.transient]
    if transient:
        raise TransientError(
            f"e-mail sync of {organization.slug}: "
            + "; ".join(f"{report.mailbox}: {report.error}" for report in transient)
        )
    return summary


def mailbox_poll_enqueue(*, mailbox: Mailbox, triggered_by: str = "system") -> str:
    """Enqueue a poll of one mailbox (after commit); returns the task id."""
    return task_enqueue(
        name=SYNC_MAILBOX_TASK,
        kwargs={"mailbox_id": mailbox.pk, "organization_id": mailbox.organization_id},
        triggered_by=triggered_by,
    )


def mailbox_poll_enqueue_all(
    *, organization: Organization | None = None, triggered_by: str = "system"
) -> dict[str, str]:
    """One poll task per enabled mailbox (of one organization, or all); {mailbox id: task id}."""
    return {
        str(mailbox.pk): mailbox_poll_enqueue(mailbox=mailbox, triggered_by=triggered_by)
        for mailbox in email_selectors.mailbox_list(organization=organization, enabled=True)
    }


def email_sync_enqueue(*, organization: Organization, triggered_by: str = "system") -> str:
    """Enqueue an e-mail sync of the whole organization (one task with progress)."""
    return task_enqueue(
        name=MANUAL_SYNC_TASK,
        kwargs={"organization_id": organization.pk, "source": "email"},
        triggered_by=triggered_by,
    )
