"""Leases: one poll per mailbox at a time, taken over when its owner died."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from integrations.models import (
    Mailbox,
)

logger = structlog.get_logger(__name__)
_HOSTNAME = socket.gethostname()


class MailboxLeaseLost(Exception):
    """Another poll took this mailbox over (ours was presumed dead); stop without committing."""


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
