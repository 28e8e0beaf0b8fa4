"""Polls: fetch new UIDs in bounded batches, ingest, then flag after a durable commit."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import structlog
from django.conf import settings
from django.utils import timezone

from integrations.crypto import DecryptionError
from integrations.email import selectors as email_selectors
from integrations.email.client import (
    ImapError,
    ImapMailbox,
)
from integrations.email.oauth import OAuthTransientError
from integrations.email.services.ingest import (
    _NOT_FLAGGED,
    AttachmentStorageError,
    EmailBatch,
    email_ingest,
    email_record_too_large,
)
from integrations.email.services.lease import (
    MailboxLeaseLost,
    _lease_renew,
    mailbox_lease_acquire,
    mailbox_lease_release,
)
from integrations.email.services.mailboxes import mailbox_connect
from integrations.email.services.oauth import MailboxNeedsConsent
from integrations.models import (
    InboundEmail,
    Mailbox,
)
from integrations.transactions import atomic_async_commit
from taskops.base import TransientError
from taskops.progress import ProgressCallback

logger = structlog.get_logger(__name__)
# A fetch batch holds at most this many messages, and this many bytes beyond its first
# message, so a mailbox full of large attachments does not fill the worker's memory.
FETCH_BATCH_MESSAGES = 100
FETCH_BATCH_BYTES = 32 * 1024 * 1024
# UIDs whose sizes are asked for at once when planning the batches.
SIZE_LOOKAHEAD = 1000


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
    too_large: int = 0
    flagged: int = 0
    error: str = ""
    error_kind: str = ""
    transient: bool = False

    def count(self, state: str) -> None:
        setattr(self, state, getattr(self, state) + 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fetch_batches(
    imap: ImapMailbox, uids: Sequence[int], *, max_message_bytes: int
) -> Iterator[tuple[list[int], dict[int, int]]]:
    """Split uids into batches bounded by FETCH_BATCH_MESSAGES and FETCH_BATCH_BYTES.

    Yields (batch, {uid: size} of its messages over ``max_message_bytes``): those are not
    downloaded and count nothing towards the batch's bytes. Sizes are asked for a slice
    at a time, so a huge first poll starts ingesting at once.
    """
    batch: list[int] = []
    oversized: dict[int, int] = {}
    size = 0
    for start in range(0, len(uids), SIZE_LOOKAHEAD):
        chunk = uids[start : start + SIZE_LOOKAHEAD]
        sizes = imap.sizes(chunk)
        for uid in chunk:
            message_size = sizes.get(uid, 0)
            too_large = message_size > max_message_bytes
            if batch and (
                len(batch) >= FETCH_BATCH_MESSAGES
                or (not too_large and size + message_size > FETCH_BATCH_BYTES)
            ):
                yield batch, oversized
                batch, oversized, size = [], {}, 0
            batch.append(uid)
            if too_large:
                oversized[uid] = message_size
            else:
                size += message_size
    if batch:
        yield batch, oversized


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
    with mailbox_connect(mailbox=mailbox) as imap:
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
        limit = settings.ZENITH_MAX_MESSAGE_BYTES
        for batch, oversized in _fetch_batches(imap, uids, max_message_bytes=limit):
            raws = imap.fetch([uid for uid in batch if uid not in oversized])
            headers = imap.headers(list(oversized)) if oversized else {}
            # Checked before every batch's commits, so a poll presumed dead stops early.
            _lease_renew(mailbox=mailbox, owner=owner)
            # Expunged since the search: nothing to ingest.
            present = [uid for uid in batch if uid in oversized or uid in raws]
            ingest = partial(
                _ingest_one,
                mailbox=mailbox,
                uidvalidity=uidvalidity,
                oversized=oversized,
                headers=headers,
                raws=raws,
            )
            try:
                # The usual batch (new mail, no conflicts) in one transaction: a commit per
                # message cost more than the message's rows.
                with atomic_async_commit():
                    batch = EmailBatch(mailbox=mailbox)
                    rows = [ingest(uid=uid, batch=batch) for uid in present]
                    batch.flush()
            except Exception as exc:
                # Rolled back as a whole (a Message-ID seen before, a lost race, a message
                # that cannot be stored): again one message per transaction, each outcome
                # its own, as ingestion is defined.
                logger.info(
                    "email_batch_one_by_one",
                    mailbox_id=mailbox.pk,
                    uids=len(present),
                    error=str(exc),
                )
                rows = [ingest(uid=uid, batch=None) for uid in present]
            to_flag: list[int] = []
            for uid, row, duration in rows:
                logger.info(
                    "email_ingested",
                    organization=mailbox.organization_id,
                    mailbox_id=mailbox.pk,
                    uid=uid,
                    state=row.state,
                    ticket_id=row.ticket_id,
                    inbound_email_id=row.pk,
                    size=row.size,
                    duration_ms=round(duration * 1000, 1),
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


def _ingest_one(
    *,
    mailbox: Mailbox,
    uidvalidity: int,
    uid: int,
    oversized: dict[int, int],
    headers: dict[int, bytes],
    raws: dict[int, bytes],
    batch: EmailBatch | None,
) -> tuple[int, InboundEmail, float]:
    """Ingest one UID of a fetch batch; returns (uid, its ledger row, seconds it took)."""
    started = time.monotonic()
    if uid in oversized:
        row = email_record_too_large(
            mailbox=mailbox,
            uidvalidity=uidvalidity,
            uid=uid,
            size=oversized[uid],
            header=headers.get(uid, b""),
        )
    else:
        row = email_ingest(
            mailbox=mailbox, uidvalidity=uidvalidity, uid=uid, raw=raws[uid], batch=batch
        )
    return uid, row, time.monotonic() - started


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
        report.error, report.error_kind, report.transient = (
            str(exc),
            exc.kind,
            isinstance(exc, TransientError),
        )
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
    except MailboxNeedsConsent as exc:
        # Not retried: only an admin's new consent helps (the alert on integrations in
        # error tells them); other mailboxes go on.
        report.error, report.error_kind = f"needs consent: {exc}", "needs_consent"
        logger.warning("mailbox_poll_failed", mailbox_id=mailbox.pk, error_kind="needs_consent")
    except OAuthTransientError as exc:
        report.error, report.error_kind, report.transient = str(exc), "oauth", True
        logger.warning("mailbox_poll_failed", mailbox_id=mailbox.pk, error_kind="oauth")
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
