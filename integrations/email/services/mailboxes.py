"""Mailbox configuration, credentials and the connection test."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import structlog
from django.conf import settings

from integrations.crypto import DecryptionError
from integrations.email import selectors as email_selectors
from integrations.email.client import (
    ConnectionTestResult,
    MailboxConfig,
    test_connection,
)
from integrations.models import (
    Mailbox,
)
from tickets.models import Organization

logger = structlog.get_logger(__name__)
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


class MailboxLocationLocked(ValueError):
    """Host, username or folder of a mailbox that already ingested mail cannot change."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            f"{', '.join(fields)} cannot change once mail was ingested from this folder; "
            "add another mailbox instead (the ledger keeps mail from being ingested twice)"
        )
        self.fields = fields


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
