"""Mailbox configuration, credentials and the connection test."""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from django.conf import settings

from integrations.crypto import DecryptionError
from integrations.email import selectors as email_selectors
from integrations.email.client import (
    ConnectionTestResult,
    ImapAuthError,
    ImapMailbox,
    MailboxConfig,
    test_connection,
)
from integrations.email.services.oauth import mailbox_access_token
from integrations.models import Mailbox, MailboxAuthMethod, OAuthStatus
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
    "auth_method",
    "oauth_provider",
    "oauth_authorize_url",
    "oauth_token_url",
    "oauth_scopes",
)
_OAUTH_GRANT_FIELDS = (
    "auth_method",
    "oauth_provider",
    "oauth_authorize_url",
    "oauth_token_url",
    "oauth_scopes",
    "username",
    "host",
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
    password: str = "",
    port: int = 993,
    security: str = "ssl",
    folder: str = "INBOX",
    processed_folder: str = "",
    enabled: bool = True,
    auth_method: str = MailboxAuthMethod.PASSWORD,
    oauth_provider: str = "",
    oauth_authorize_url: str = "",
    oauth_token_url: str = "",
    oauth_scopes: str = "",
) -> Mailbox:
    """Add a mailbox to poll; the password is stored encrypted. An OAuth2 mailbox polls
    once an admin consented (``mailbox_oauth_start``)."""
    return Mailbox.objects.create(
        auth_method=auth_method,
        oauth_provider=oauth_provider,
        oauth_authorize_url=oauth_authorize_url,
        oauth_token_url=oauth_token_url,
        oauth_scopes=oauth_scopes,
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
    if any(name in changed for name in _OAUTH_GRANT_FIELDS):
        # A grant belongs to one provider and account: another one needs consent anew.
        mailbox.oauth_refresh_token = mailbox.oauth_access_token = ""
        mailbox.oauth_access_expires_at, mailbox.oauth_account = None, ""
        mailbox.oauth_status, mailbox.oauth_status_reason = OAuthStatus.NOT_CONNECTED, ""
        changed += [
            "oauth_refresh_token",
            "oauth_access_token",
            "oauth_access_expires_at",
            "oauth_account",
            "oauth_status",
            "oauth_status_reason",
        ]
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


def mailbox_config(*, mailbox: Mailbox, force_refresh: bool = False) -> MailboxConfig:
    """What the IMAP client needs to reach the mailbox (decrypts the password, or gets an
    OAuth2 access token, refreshing it when due or when ``force_refresh``)."""
    access_token = ""
    if mailbox.auth_method == MailboxAuthMethod.OAUTH2:
        access_token = mailbox_access_token(mailbox=mailbox, force_refresh=force_refresh)
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
        access_token=access_token,
    )


@contextmanager
def mailbox_connect(*, mailbox: Mailbox) -> Iterator[ImapMailbox]:
    """A logged-in IMAP session; an OAuth2 login refused once is retried with a fresh token
    (providers may end a token before the lifetime they announced)."""
    imap = ImapMailbox(mailbox_config(mailbox=mailbox))
    try:
        imap.connect()
    except ImapAuthError:
        if mailbox.auth_method != MailboxAuthMethod.OAUTH2:
            raise
        imap = ImapMailbox(mailbox_config(mailbox=mailbox, force_refresh=True))
        imap.connect()
    with imap:
        yield imap


def mailbox_test_connection(*, mailbox: Mailbox) -> ConnectionTestResult:
    """Log in and look at the folders without changing anything on the server."""
    try:
        config = mailbox_config(mailbox=mailbox)
    except (DecryptionError, ValueError) as exc:
        return ConnectionTestResult(ok=False, error_kind="config", error=str(exc))
    return test_connection(config)
