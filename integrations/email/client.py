"""Thin, Django-free IMAP client for polling support mailboxes.

Every failure surfaces as a subclass of :class:`ImapError` so callers can tell
credentials problems (record them, stop retrying) from transient network
problems (retry later) without knowing anything about imapclient or sockets.
"""

from __future__ import annotations

import contextlib
import logging
import re
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import ClassVar, Literal, Self

from imapclient import IMAPClient
from imapclient import exceptions as imap_exc

from taskops.errors import TransientError

__all__ = [
    "ConnectionTestResult",
    "ImapAuthError",
    "ImapDestinationError",
    "ImapError",
    "ImapFolderError",
    "ImapMailbox",
    "ImapProtocolError",
    "ImapTLSError",
    "ImapTransientError",
    "MailboxConfig",
    "Security",
    "test_connection",
]

logger = logging.getLogger(__name__)

Security = Literal["ssl", "starttls", "none"]
SECURITY_CHOICES: tuple[Security, ...] = ("ssl", "starttls", "none")

SEEN = b"\\Seen"
# IMAP UIDs are non-zero unsigned 32-bit integers (RFC 3501 section 2.3.1.1).
MAX_UID = 2**32 - 1
# Keeps command lines short: some servers reject very long UID sets.
BATCH_SIZE = 200

# RFC 5530 response codes that mean "try again later" rather than "you are wrong".
_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "INUSE", "LIMIT", "SERVERBUG", "OVERQUOTA"})
_FOLDER_CODES = frozenset({"NONEXISTENT", "TRYCREATE", "NOPERM", "CANNOT"})
_RESPONSE_CODE_RE = re.compile(r"\[([A-Z][A-Z0-9-]*)")


class ImapError(Exception):
    """Base class of every error raised by this module."""

    kind: ClassVar[str] = "error"


class ImapAuthError(ImapError):
    """The server rejected the credentials; retrying will not help."""

    kind = "auth"


class ImapTransientError(ImapError, TransientError):
    """Network, socket, timeout or temporary server failure; safe to retry later."""

    kind = "transient"


class ImapTLSError(ImapError):
    """TLS could not be established (no STARTTLS, bad certificate, handshake failure)."""

    kind = "tls"


class ImapFolderError(ImapError):
    """A folder is missing or cannot be selected or created."""

    kind = "folder"


class ImapDestinationError(ImapError):
    """The host resolved to an address this deployment may not connect to (SSRF guard)."""

    kind = "destination"


class ImapProtocolError(ImapError):
    """The server refused a command or answered something unexpected."""

    kind = "protocol"


@dataclass(frozen=True)
class MailboxConfig:
    """Everything needed to reach one IMAP mailbox."""

    host: str
    port: int
    security: Security
    username: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    processed_folder: str | None = None
    timeout: float = 30.0
    # Custom trust (e.g. a private CA); None means the system's verifying default.
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    # Called with the IP address the socket actually reached, before anything is sent;
    # False refuses it (the host may resolve differently now than when it was saved).
    peer_allowed: Callable[[str], bool] | None = field(default=None, repr=False, compare=False)
    # With an OAuth2 access token the login is SASL XOAUTH2 and the password is unused.
    access_token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        """Reject configurations that cannot possibly work."""
        if self.security not in SECURITY_CHOICES:
            raise ValueError(f"security must be one of {SECURITY_CHOICES}, got {self.security!r}")
        if not self.host:
            raise ValueError("host is required")
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"invalid port {self.port!r}")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if not self.folder:
            raise ValueError("folder is required")
        if self.processed_folder == self.folder:
            raise ValueError("processed_folder must differ from folder")


@dataclass(frozen=True)
class ConnectionTestResult:
    """Outcome of :func:`test_connection`, safe to show to an administrator."""

    ok: bool
    error_kind: str | None = None
    error: str | None = None
    uidvalidity: int | None = None
    message_count: int | None = None
    processed_folder_exists: bool | None = None
    capabilities: frozenset[str] = frozenset()


def _response_code(message: str) -> str | None:
    """Return the RFC 5530 response code (e.g. 'UNAVAILABLE') in a server message."""
    match = _RESPONSE_CODE_RE.search(message)
    return match.group(1) if match else None


def _command_error(action: str, exc: imap_exc.IMAPClientError) -> ImapError:
    """Classify a NO/BAD answer from the server."""
    message = f"{action} failed: {exc}"
    code = _response_code(str(exc))
    if code in _TRANSIENT_CODES:
        return ImapTransientError(message)
    if code in _FOLDER_CODES:
        return ImapFolderError(message)
    return ImapProtocolError(message)


@contextlib.contextmanager
def _translate(action: str, *, tls_phase: bool = False) -> Iterator[None]:
    """Turn imapclient/socket/ssl exceptions raised inside the block into ImapError."""
    try:
        yield
    except ImapError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise ImapTLSError(f"{action}: certificate verification failed: {exc}") from exc
    except ssl.SSLError as exc:
        # During the handshake this is a configuration problem; later it is a dropped link.
        if tls_phase:
            raise ImapTLSError(f"{action}: TLS handshake failed: {exc}") from exc
        raise ImapTransientError(f"{action}: TLS connection error: {exc}") from exc
    except TimeoutError as exc:
        raise ImapTransientError(f"{action}: timed out") from exc
    except (OSError, EOFError) as exc:
        raise ImapTransientError(f"{action}: network error: {exc}") from exc
    except imap_exc.IMAPClientReadOnlyError as exc:
        # Must precede AbortError: imaplib's readonly subclasses abort.
        raise ImapProtocolError(f"{action}: folder is read-only: {exc}") from exc
    except imap_exc.IMAPClientAbortError as exc:
        if tls_phase:
            raise ImapTLSError(f"{action}: {exc}") from exc
        raise ImapTransientError(f"{action}: connection aborted: {exc}") from exc
    except imap_exc.IMAPClientError as exc:
        if tls_phase:
            raise ImapTLSError(f"{action}: {exc}") from exc
        raise _command_error(action, exc) from exc


class ImapNotImapError(ImapProtocolError):
    """Whatever answered on host:port did not greet like an IMAP server."""

    kind = "not_imap"


@contextlib.contextmanager
def _not_imap_on_protocol_error() -> Iterator[None]:
    try:
        yield
    except ImapProtocolError as exc:
        raise ImapNotImapError(str(exc)) from exc


def _batches(uids: Sequence[int]) -> Iterator[list[int]]:
    """Yield uids in command-sized chunks."""
    for start in range(0, len(uids), BATCH_SIZE):
        yield list(uids[start : start + BATCH_SIZE])


def _clean_uids(uids: Iterable[int]) -> list[int]:
    """Return sorted unique valid UIDs, rejecting garbage early."""
    result = sorted({int(uid) for uid in uids})
    if result and (result[0] < 1 or result[-1] > MAX_UID):
        raise ValueError(f"UIDs must be in 1..{MAX_UID}")
    return result


class ImapMailbox:
    """A logged-in IMAP session on one mailbox; use as a context manager."""

    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        self._client: IMAPClient | None = None
        self.selected_folder: str | None = None
        self.uidvalidity: int | None = None
        self.message_count: int | None = None

    # -- session ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def client(self) -> IMAPClient:
        """The underlying IMAPClient; raises if not connected."""
        if self._client is None:
            raise RuntimeError("ImapMailbox is not connected; use it as a context manager")
        return self._client

    def connect(self) -> None:
        """Open the connection, secure it as configured and log in."""
        if self._client is not None:
            return
        cfg = self.config
        implicit_tls = cfg.security == "ssl"
        context = self._ssl_context() if cfg.security != "none" else None
        with (
            _not_imap_on_protocol_error(),
            _translate(f"connect to {cfg.host}:{cfg.port}", tls_phase=implicit_tls),
        ):
            client = IMAPClient(
                cfg.host,
                port=cfg.port,
                ssl=implicit_tls,
                ssl_context=context,
                timeout=cfg.timeout,
            )
        try:
            self._check_peer(client)
            if context is not None and not implicit_tls:
                self._starttls(client, context)
            self._login(client)
        except BaseException:
            _close_quietly(client)
            raise
        self._client = client

    def close(self) -> None:
        """Log out and drop the connection, ignoring errors (it may already be dead)."""
        client, self._client = self._client, None
        self.selected_folder = None
        if client is not None:
            _close_quietly(client)

    def _check_peer(self, client: IMAPClient) -> None:
        """Refuse a connection to a disallowed address before any credential is sent."""
        if self.config.peer_allowed is None:
            return
        try:
            peer = str(client.socket().getpeername()[0])
        except OSError as exc:
            raise ImapTransientError(f"connect to {self.config.host}: {exc}") from exc
        if not self.config.peer_allowed(peer):
            raise ImapDestinationError(
                f"{self.config.host} resolves to an address that is not allowed ({peer})"
            )

    def _ssl_context(self) -> ssl.SSLContext:
        """Return the configured context or a verifying system default."""
        if self.config.ssl_context is not None:
            return self.config.ssl_context
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)

    def _starttls(self, client: IMAPClient, context: ssl.SSLContext) -> None:
        """Upgrade to TLS or raise; never continue in plain text."""
        with _translate("STARTTLS", tls_phase=True):
            if not client.has_capability("STARTTLS"):
                raise ImapTLSError(
                    "server does not offer STARTTLS; refusing to log in without encryption"
                )
            client.starttls(ssl_context=context)

    def _login(self, client: IMAPClient) -> None:
        """Authenticate, classifying rejections as ImapAuthError."""
        cfg = self.config
        with _translate("login"):
            try:
                if cfg.access_token:
                    client.oauth2_login(cfg.username, cfg.access_token)
                elif (cfg.username + cfg.password).isascii():
                    client.login(cfg.username, cfg.password)
                elif client.has_capability("AUTH=PLAIN"):
                    # LOGIN cannot carry non-ASCII; SASL PLAIN sends UTF-8.
                    client.plain_login(cfg.username, cfg.password)
                else:
                    raise ImapAuthError(
                        "credentials contain non-ASCII characters but the server lacks AUTH=PLAIN"
                    )
            except imap_exc.LoginError as exc:
                raise _login_error(exc) from exc

    # -- mailbox operations ----------------------------------------------

    def capabilities(self) -> frozenset[str]:
        """Return the server's capabilities as upper-case strings."""
        with _translate("CAPABILITY"):
            caps = self.client.capabilities()
        return frozenset(_to_str(cap).upper() for cap in caps)

    def select(self, folder: str | None = None, *, readonly: bool = False) -> int:
        """Select folder (default: the configured one) and return its UIDVALIDITY."""
        folder = folder or self.config.folder
        try:
            with _translate(f"SELECT {folder!r}"):
                info = self.client.select_folder(folder, readonly=readonly)
        except ImapProtocolError as exc:
            # A refused SELECT almost always means a missing or forbidden folder.
            raise ImapFolderError(str(exc)) from exc
        raw_validity = info.get(b"UIDVALIDITY")
        if raw_validity is None:
            raise ImapProtocolError(f"server did not report UIDVALIDITY for {folder!r}")
        self.selected_folder = folder
        self.uidvalidity = int(raw_validity)
        self.message_count = int(info.get(b"EXISTS", 0))
        return self.uidvalidity

    def uids_after(self, last_uid: int) -> list[int]:
        """Return the sorted UIDs greater than last_uid in the selected folder."""
        self._require_selected()
        if last_uid < 0:
            raise ValueError("last_uid must be >= 0")
        if last_uid >= MAX_UID:
            return []
        with _translate("UID SEARCH"):
            found = self.client.search(["UID", f"{last_uid + 1}:*"])
        # "n:*" always matches the highest UID even when it is below n (RFC 3501 6.4.8).
        return sorted(uid for uid in {int(u) for u in found} if uid > last_uid)

    def fetch(self, uids: Iterable[int]) -> dict[int, bytes]:
        """Return {uid: raw RFC 822 bytes} without setting \\Seen; vanished UIDs are omitted."""
        self._require_selected()
        wanted = _clean_uids(uids)
        result: dict[int, bytes] = {}
        for batch in _batches(wanted):
            with _translate("UID FETCH"):
                # BODY.PEEK never sets \Seen, so the customer's mailbox is left as it was.
                data = self.client.fetch(batch, ["BODY.PEEK[]"])
            requested = set(batch)
            for uid, item in data.items():
                body = item.get(b"BODY[]")
                # Servers may push unsolicited FETCH data for other messages; ignore it.
                if uid in requested and isinstance(body, bytes):
                    result[int(uid)] = body
        return result

    def sizes(self, uids: Iterable[int]) -> dict[int, int]:
        """Return {uid: RFC822.SIZE}, so callers can fetch in memory-bounded batches."""
        self._require_selected()
        result: dict[int, int] = {}
        for batch in _batches(_clean_uids(uids)):
            with _translate("UID FETCH RFC822.SIZE"):
                data = self.client.fetch(batch, ["RFC822.SIZE"])
            requested = set(batch)
            for uid, item in data.items():
                size = item.get(b"RFC822.SIZE")
                if uid in requested and size is not None:
                    result[int(uid)] = int(size)
        return result

    def headers(self, uids: Iterable[int], *, max_bytes: int = 16384) -> dict[int, bytes]:
        """Return {uid: the first ``max_bytes`` of its Subject, From, Date and Message-ID lines}.

        For messages too large to download: the server sends only these header fields.
        """
        self._require_selected()
        section = "BODY.PEEK[HEADER.FIELDS (SUBJECT FROM DATE MESSAGE-ID)]"
        result: dict[int, bytes] = {}
        for batch in _batches(_clean_uids(uids)):
            with _translate("UID FETCH HEADER.FIELDS"):
                data = self.client.fetch(batch, [f"{section}<0.{max_bytes}>"])
            requested = set(batch)
            for uid, item in data.items():
                if uid not in requested:
                    continue
                for key, value in item.items():
                    if key.upper().startswith(b"BODY[HEADER") and isinstance(value, bytes):
                        result[int(uid)] = value[:max_bytes]
        return result

    def mark_seen(self, uids: Iterable[int]) -> None:
        """Set \\Seen on uids in the selected folder."""
        self._require_selected()
        for batch in _batches(_clean_uids(uids)):
            with _translate("UID STORE +FLAGS (\\Seen)"):
                self.client.add_flags(batch, [SEEN], silent=True)

    def ensure_folder(self, folder: str) -> bool:
        """Create folder if it does not exist; return True if it was created."""
        with _translate(f"LIST {folder!r}"):
            if self.client.folder_exists(folder):
                return False
        try:
            with _translate(f"CREATE {folder!r}"):
                self.client.create_folder(folder)
        except ImapError as exc:
            # Another poller may have created it between LIST and CREATE.
            with _translate(f"LIST {folder!r}"):
                if self.client.folder_exists(folder):
                    return False
            if isinstance(exc, ImapTransientError):
                raise
            raise ImapFolderError(str(exc)) from exc
        # Subscribing only makes the folder visible in mail clients; failure is harmless.
        with contextlib.suppress(Exception):
            self.client.subscribe_folder(folder)
        return True

    def move(self, uids: Iterable[int], folder: str | None = None) -> None:
        """Move uids to folder (default: processed_folder), creating it; never deletes mail."""
        self._require_selected()
        target = folder or self.config.processed_folder
        if not target:
            raise ValueError("no target folder given and no processed_folder configured")
        if target == self.selected_folder:
            raise ValueError("cannot move messages into the selected folder")
        wanted = _clean_uids(uids)
        if not wanted:
            return
        self.ensure_folder(target)
        with _translate("CAPABILITY"):
            use_move = self.client.has_capability("MOVE")
        for batch in _batches(wanted):
            if use_move:
                with _translate(f"UID MOVE to {target!r}"):
                    self.client.move(batch, target)
            else:
                # COPY + \Deleted + EXPUNGE would delete mail, which we never do:
                # the original stays, marked \Seen, and UID tracking skips it.
                with _translate(f"UID COPY to {target!r}"):
                    self.client.copy(batch, target)
                with _translate("UID STORE +FLAGS (\\Seen)"):
                    self.client.add_flags(batch, [SEEN], silent=True)

    def _require_selected(self) -> None:
        """Fail fast on programming errors instead of sending commands in the wrong state."""
        if self.selected_folder is None:
            raise RuntimeError("select() a folder first")


def test_connection(config: MailboxConfig) -> ConnectionTestResult:
    """Connect, log in and inspect the folders without changing anything."""
    try:
        with ImapMailbox(config) as mailbox:
            capabilities = mailbox.capabilities()
            uidvalidity = mailbox.select(readonly=True)
            processed_exists: bool | None = None
            if config.processed_folder:
                with _translate(f"LIST {config.processed_folder!r}"):
                    processed_exists = mailbox.client.folder_exists(config.processed_folder)
            return ConnectionTestResult(
                ok=True,
                uidvalidity=uidvalidity,
                message_count=mailbox.message_count,
                processed_folder_exists=processed_exists,
                capabilities=capabilities,
            )
    except ImapError as exc:
        kind = failure_kind(exc)
        return ConnectionTestResult(ok=False, error_kind=kind, error=FAILURE_MESSAGES[kind])


# What a connection test says about each kind of failure. Never the server's own words:
# whatever answers on host:port (an internal service, an HTTP server) is not echoed.
FAILURE_MESSAGES = {
    "auth": "the server refused the user name or password",
    "tls": "TLS could not be established (certificate, handshake or no STARTTLS)",
    "timeout": "the server did not answer in time",
    "refused": "the connection was refused",
    "not_imap": "the server did not answer as an IMAP server",
    "network": "the host could not be reached",
    "folder": "the folder does not exist or cannot be opened",
    "destination": "the host resolves to an address this deployment may not connect to",
    "protocol": "the server refused a command",
    "config": "the mailbox settings are incomplete or cannot be read",
}


def failure_kind(exc: ImapError) -> str:
    """A connection failure's kind: auth, tls, timeout, refused, not_imap, network, ..."""
    if not isinstance(exc, ImapTransientError):
        return exc.kind if exc.kind in FAILURE_MESSAGES else "protocol"
    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "refused"
    if any(isinstance(c, TimeoutError) for c in causes):
        return "timeout"
    if any(isinstance(c, imap_exc.IMAPClientError | EOFError) for c in causes):
        # A greeting that is not "* OK", or a peer that hung up on us: not an IMAP server.
        return "not_imap"
    return "network"


# Keep pytest from collecting this helper when a test module imports it.
test_connection.__test__ = False  # type: ignore[attr-defined]


def _login_error(exc: imap_exc.LoginError) -> ImapError:
    """Classify a failed LOGIN/AUTHENTICATE."""
    # imapclient wraps every IMAP error during login, including dropped connections.
    cause = exc.__context__
    if isinstance(cause, imap_exc.IMAPClientAbortError) and not isinstance(
        cause, imap_exc.IMAPClientReadOnlyError
    ):
        return ImapTransientError(f"login: connection aborted: {cause}")
    message = f"login failed: {exc}"
    code = _response_code(str(exc))
    if code in _TRANSIENT_CODES:
        return ImapTransientError(message)
    # Without a code (or AUTHENTICATIONFAILED & co.) a NO to LOGIN means bad credentials.
    return ImapAuthError(message)


def _close_quietly(client: IMAPClient) -> None:
    """Log out, falling back to closing the socket; never raise."""
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception as exc:  # already closed or broken: nothing left to clean up
            logger.debug("IMAP shutdown failed: %s", exc)


def _to_str(value: str | bytes) -> str:
    """Decode an IMAP atom."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value
