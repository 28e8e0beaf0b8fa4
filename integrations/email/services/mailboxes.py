"""Mailbox configuration, credentials and the connection test."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from django.conf import settings

from integrations.crypto import DecryptionError
from integrations.email import selectors as email_selectors
from integrations.email.client import (
    FAILURE_MESSAGES,
    ConnectionTestResult,
    ImapAuthError,
    ImapMailbox,
    MailboxConfig,
    test_connection,
)
from integrations.email.services.oauth import (
    MailboxNeedsConsent,
    MailboxOAuthError,
    mailbox_access_token,
)
from integrations.models import Mailbox, MailboxAuthMethod, OAuthStatus
from taskops.services import task_enqueue
from tickets.models import Organization

logger = structlog.get_logger(__name__)
# Where the mail lives. UIDs only mean something within one folder of one account, so
# once mail was ingested these are fixed: another folder is another mailbox.
MAILBOX_LOCATION_FIELDS = ("host", "username", "folder")
# What a person may set on a mailbox (the admin form and the API both edit these).
MAILBOX_CONFIG_FIELDS = (
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


# Changing any of these points the stored password at another server: the request that
# changes them must carry the password (whoever knows where it goes must know it). An OAuth2
# mailbox needs no password: the change drops its grant (and any stored password), so it
# logs in again only after the mailbox's owner consents anew.
MAILBOX_ENDPOINT_FIELDS = ("host", "port", "security", "username")


class MailboxPasswordRequired(ValueError):
    """Host, port, security or username changed without the password in the same request."""

    def __init__(self, fields: list[str]) -> None:
        super().__init__(
            f"changing {', '.join(fields)} needs the mailbox password in the same request"
        )
        self.fields = fields


class MailboxDestinationRefused(ValueError):
    """Outside DEBUG: plain-text IMAP, or a host that resolves to an internal address."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def imap_address_allowed(address: str) -> bool:
    """Whether Zenith may connect to this IP: a public address, or anything in DEBUG or
    with ZENITH_IMAP_ALLOW_PRIVATE_HOSTS (loopback, private, link-local such as the cloud
    metadata 169.254.169.254, unique-local fd00::/8, shared, reserved: all refused)."""
    if settings.DEBUG or settings.ZENITH_IMAP_ALLOW_PRIVATE_HOSTS:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not imap_address_allowed(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


def mailbox_destination_check(*, host: str, port: int, security: str) -> None:
    """Refuse (MailboxDestinationRefused) what a multi-tenant deployment must not reach.

    Outside DEBUG: ``security: none`` unless ZENITH_IMAP_ALLOW_PLAINTEXT, and a host whose
    addresses are not all public unless ZENITH_IMAP_ALLOW_PRIVATE_HOSTS. The connection
    checks the address it reached again (a name may resolve elsewhere later).
    """
    if settings.DEBUG:
        return
    if security == "none" and not settings.ZENITH_IMAP_ALLOW_PLAINTEXT:
        raise MailboxDestinationRefused(
            "security",
            "plain-text IMAP sends the password in the clear; use ssl or starttls "
            "(ZENITH_IMAP_ALLOW_PLAINTEXT=1 allows it)",
        )
    if settings.ZENITH_IMAP_ALLOW_PRIVATE_HOSTS:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise MailboxDestinationRefused("host", f"{host} could not be resolved") from exc
    refused = sorted({str(info[4][0]) for info in infos if not imap_address_allowed(info[4][0])})
    if refused or not infos:
        raise MailboxDestinationRefused(
            "host",
            f"{host} resolves to an internal address ({', '.join(refused)}); only public "
            "hosts are allowed (ZENITH_IMAP_ALLOW_PRIVATE_HOSTS=1 allows others)",
        )


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
    once an admin consented (``mailbox_oauth_start``).

    MailboxDestinationRefused for plain text or an internal host outside DEBUG.
    """
    mailbox_destination_check(host=host, port=port, security=security)
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
    (MailboxLocationLocked): the ledger's UIDs belong to that one folder. Host, port,
    security and username only change with the password (MailboxPasswordRequired), and
    only to an allowed destination (MailboxDestinationRefused).
    """
    moved = [
        name
        for name in MAILBOX_LOCATION_FIELDS
        if name in data and data[name] != getattr(mailbox, name)
    ]
    if moved and email_selectors.mailbox_has_ingested(mailbox=mailbox):
        raise MailboxLocationLocked(moved)
    redirected = [
        name
        for name in MAILBOX_ENDPOINT_FIELDS
        if name in data and data[name] != getattr(mailbox, name)
    ]
    oauth = data.get("auth_method", mailbox.auth_method) == MailboxAuthMethod.OAUTH2
    if redirected and not oauth and not data.get("password"):
        raise MailboxPasswordRequired(redirected)
    if redirected:
        mailbox_destination_check(
            host=data.get("host", mailbox.host),
            port=data.get("port", mailbox.port),
            security=data.get("security", mailbox.security),
        )
    changed: list[str] = []
    for name in MAILBOX_CONFIG_FIELDS:
        if name in data and data[name] != getattr(mailbox, name):
            setattr(mailbox, name, data[name])
            changed.append(name)
    if data.get("password"):
        mailbox.password = data["password"]
        changed.append("password")
    elif redirected and email_selectors.mailbox_has_password(mailbox=mailbox):
        # Switching back to password login later must not send the old password there.
        mailbox.password = ""
        changed.append("password")
    if moved:
        mailbox.uidvalidity, mailbox.last_uid = None, 0
        changed += ["uidvalidity", "last_uid"]
    if any(name in changed for name in _OAUTH_GRANT_FIELDS) or (oauth and redirected):
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
    if "password" in changed and hasattr(mailbox, "password_set"):
        mailbox.password_set = bool(mailbox.password)  # the selector's annotation, kept true
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


def mailbox_config(
    *, mailbox: Mailbox, force_refresh: bool = False, timeout: float | None = None
) -> MailboxConfig:
    """What the IMAP client needs to reach the mailbox (decrypts the password, or gets an
    OAuth2 access token, refreshing it when due or when ``force_refresh``).

    Outside DEBUG a plain-text mailbox fails here (ValueError) unless allowed, and the
    client refuses to log in to an address ``imap_address_allowed`` refuses.
    """
    if mailbox.security == "none" and not (settings.DEBUG or settings.ZENITH_IMAP_ALLOW_PLAINTEXT):
        raise ValueError("plain-text IMAP is not allowed (ZENITH_IMAP_ALLOW_PLAINTEXT)")
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
        timeout=timeout or settings.ZENITH_IMAP_TIMEOUT,
        ssl_context=_ssl_context() if mailbox.security != "none" else None,
        peer_allowed=imap_address_allowed,
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
    """Log in and look at the folders without changing anything on the server.

    Runs in the test-connection task (sync queue), with ZENITH_IMAP_TEST_TIMEOUT; the
    error names the kind of failure, never what the remote said.
    """
    try:
        config = mailbox_config(mailbox=mailbox, timeout=settings.ZENITH_IMAP_TEST_TIMEOUT)
    except (MailboxOAuthError, MailboxNeedsConsent):
        return ConnectionTestResult(
            ok=False, error_kind="auth", error="the mailbox's OAuth2 consent is missing or refused"
        )
    except (DecryptionError, ValueError):
        return ConnectionTestResult(ok=False, error_kind="config", error=FAILURE_MESSAGES["config"])
    return test_connection(config)


def mailbox_test_connection_summary(*, mailbox: Mailbox) -> dict[str, Any]:
    """The connection test as the task's JSON result."""
    result = mailbox_test_connection(mailbox=mailbox)
    logger.info(
        "mailbox_connection_tested",
        organization=mailbox.organization_id,
        mailbox_id=mailbox.pk,
        ok=result.ok,
        error_kind=result.error_kind,
    )
    return {
        "mailbox_id": mailbox.pk,
        "ok": result.ok,
        "error_kind": result.error_kind,
        "error": result.error,
        "uidvalidity": result.uidvalidity,
        "message_count": result.message_count,
        "processed_folder_exists": result.processed_folder_exists,
    }


TEST_CONNECTION_TASK = "integrations.tasks.test_mailbox_connection"


def mailbox_test_connection_enqueue(*, mailbox: Mailbox, triggered_by: str = "system") -> str:
    """Enqueue a connection test (sync queue, after commit): it never runs in a web process."""
    return task_enqueue(
        name=TEST_CONNECTION_TASK,
        kwargs={"mailbox_id": mailbox.pk, "organization_id": mailbox.organization_id},
        triggered_by=triggered_by,
    )
