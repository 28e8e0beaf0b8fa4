"""The original bytes of every ingested message, kept (gzip) for the retention period.

A mis-parsed mail can be looked at again, re-parsed after a fix, or handed to the
sender's admin. Files go through Django's default storage under a name fixed by the
mailbox, UIDVALIDITY and UID, so a message fetched twice overwrites its own copy and never
leaves a second one; ``raw_mail_prune`` (the hourly cleanup) deletes them after
``ZENITH_RAW_MAIL_RETENTION_DAYS``.
"""

from __future__ import annotations

import gzip
from datetime import timedelta

import structlog
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from integrations.models import InboundEmail, Mailbox

logger = structlog.get_logger(__name__)

RAW_PREFIX = "raw-mail"
# Fast: the copy is for people, rarely read; level 6 would cost 3x the CPU for ~10% less.
_GZIP_LEVEL = 1


def raw_mail_name(*, mailbox: Mailbox, uidvalidity: int, uid: int) -> str:
    return f"{RAW_PREFIX}/{mailbox.organization_id}/{mailbox.pk}/{uidvalidity}-{uid}.eml.gz"


def raw_mail_store(*, mailbox: Mailbox, uidvalidity: int, uid: int, raw: bytes) -> str:
    """Write the compressed original; returns its storage name (raises OSError on failure)."""
    name = raw_mail_name(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid)
    if default_storage.exists(name):
        default_storage.delete(name)
    saved: str = default_storage.save(
        name, ContentFile(gzip.compress(raw, compresslevel=_GZIP_LEVEL))
    )
    return saved


def raw_mail_read(*, row: InboundEmail) -> bytes | None:
    """The original message of a ledger row, or None when it was pruned or never kept."""
    if not row.raw_file:
        return None
    try:
        with default_storage.open(row.raw_file, "rb") as handle:
            return gzip.decompress(handle.read())
    except (OSError, EOFError):
        return None


def raw_mail_prune(*, older_than: timedelta | None = None, batch_size: int = 1000) -> int:
    """Delete originals past the retention period (files first, then the row's link)."""
    age = older_than or timedelta(days=settings.ZENITH_RAW_MAIL_RETENTION_DAYS)
    cutoff = timezone.now() - age
    pruned = 0
    while True:
        rows = list(
            InboundEmail.objects.filter(received_at__lt=cutoff)
            .exclude(raw_file="")
            .values_list("pk", "raw_file")[:batch_size]
        )
        if not rows:
            return pruned
        for _, name in rows:
            try:
                default_storage.delete(name)
            except OSError as exc:  # a missing file is fine; the link goes either way
                logger.warning("raw_mail_delete_failed", name=name, error=str(exc))
        pruned += InboundEmail.objects.filter(pk__in=[pk for pk, _ in rows]).update(raw_file="")
