"""integrations.email.client against a real Dovecot (fixtures from tests.support.dovecot)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient

from integrations.email.client import (
    ImapAuthError,
    ImapFolderError,
    ImapMailbox,
    ImapTLSError,
    ImapTransientError,
    MailboxConfig,
    test_connection,
)
from taskops.errors import TransientError
from tests.support import email_samples as samples
from tests.support.dovecot import DovecotServer, ImapAccount

pytestmark = pytest.mark.dovecot

PROCESSED = "Zenith/Processed"


def config_for(account: ImapAccount, **overrides: object) -> MailboxConfig:
    """A plain-text MailboxConfig for the test account."""
    values: dict[str, object] = {
        "host": account.host,
        "port": account.port,
        "security": "none",
        "username": account.username,
        "password": account.password,
        "processed_folder": PROCESSED,
        "timeout": 10.0,
    }
    values.update(overrides)
    return MailboxConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def closed_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections but never sends an IMAP greeting."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


@pytest.fixture
def login_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every LOGIN/AUTHENTICATE attempt the client makes."""
    calls: list[str] = []
    real_login, real_plain = IMAPClient.login, IMAPClient.plain_login

    def login(self: IMAPClient, username: str, password: str) -> object:
        calls.append("LOGIN")
        return real_login(self, username, password)

    def plain_login(self: IMAPClient, identity: str, password: str, *args: object) -> object:
        calls.append("AUTHENTICATE PLAIN")
        return real_plain(self, identity, password, *args)

    monkeypatch.setattr(IMAPClient, "login", login)
    monkeypatch.setattr(IMAPClient, "plain_login", plain_login)
    return calls


# -- connecting and logging in ----------------------------------------------


def test_login_ok(imap_account: ImapAccount) -> None:
    with ImapMailbox(config_for(imap_account)) as mailbox:
        assert "IMAP4REV1" in mailbox.capabilities()
        assert mailbox.client is not None
    # Leaving the block logs out and forgets the connection.
    with pytest.raises(RuntimeError):
        _ = mailbox.client


def test_wrong_password_is_an_auth_error(imap_account: ImapAccount) -> None:
    with pytest.raises(ImapAuthError) as excinfo:
        ImapMailbox(config_for(imap_account, password="wrong")).connect()
    assert not isinstance(excinfo.value, ImapTransientError)
    assert excinfo.value.kind == "auth"
    assert not isinstance(excinfo.value, TransientError)
    assert "AUTHENTICATIONFAILED" in str(excinfo.value)


def test_unknown_user_is_an_auth_error(imap_account: ImapAccount) -> None:
    with pytest.raises(ImapAuthError):
        ImapMailbox(config_for(imap_account, username="nobody-here")).connect()


def test_non_ascii_password_uses_sasl_plain(
    dovecot_server: DovecotServer, login_calls: list[str]
) -> None:
    username, password = dovecot_server.add_user("unicode", "pässwörd-✓")
    account = ImapAccount(server=dovecot_server, username=username, password=password)
    with ImapMailbox(config_for(account)) as mailbox:
        assert mailbox.select() > 0
    assert login_calls == ["AUTHENTICATE PLAIN"]


def test_connection_refused_is_transient(closed_port: int) -> None:
    config = MailboxConfig("127.0.0.1", closed_port, "none", "u", "p", timeout=5)
    with pytest.raises(ImapTransientError) as excinfo:
        ImapMailbox(config).connect()
    assert isinstance(excinfo.value, TransientError)
    assert excinfo.value.kind == "transient"


def test_silent_server_times_out_as_transient(silent_server: int) -> None:
    config = MailboxConfig("127.0.0.1", silent_server, "none", "u", "p", timeout=0.5)
    with pytest.raises(ImapTransientError, match="timed out"):
        ImapMailbox(config).connect()


def test_dropped_connection_mid_session_is_transient(imap_account: ImapAccount) -> None:
    imap_account.append("INBOX", samples.plain())
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        mailbox.client.shutdown()
        with pytest.raises(ImapTransientError):
            mailbox.uids_after(0)


def test_starttls_is_never_downgraded_to_plain_text(
    imap_account: ImapAccount, login_calls: list[str]
) -> None:
    # The fixture's Dovecot runs with ssl = no, so it does not offer STARTTLS.
    config = config_for(imap_account, security="starttls")
    with pytest.raises(ImapTLSError, match="STARTTLS"):
        ImapMailbox(config).connect()
    assert login_calls == []


def test_implicit_tls_against_plain_port_is_a_tls_error(imap_account: ImapAccount) -> None:
    with pytest.raises(ImapTLSError, match="TLS handshake failed"):
        ImapMailbox(config_for(imap_account, security="ssl", timeout=5)).connect()


# -- TLS against a Dovecot with a self-signed certificate ---------------------


def test_starttls_then_login(dovecot_tls_server: DovecotServer) -> None:
    username, password = dovecot_tls_server.add_user("starttls")
    config = MailboxConfig(
        dovecot_tls_server.host,
        dovecot_tls_server.port,
        "starttls",
        username,
        password,
        ssl_context=dovecot_tls_server.ssl_context(),
    )
    with ImapMailbox(config) as mailbox:
        assert mailbox.select() > 0
        assert isinstance(mailbox.client.socket(), ssl.SSLSocket)


def test_implicit_tls_then_login(dovecot_tls_server: DovecotServer) -> None:
    username, password = dovecot_tls_server.add_user("imaps")
    port = dovecot_tls_server.imaps_port
    assert port is not None
    config = MailboxConfig(
        dovecot_tls_server.host,
        port,
        "ssl",
        username,
        password,
        ssl_context=dovecot_tls_server.ssl_context(),
    )
    with ImapMailbox(config) as mailbox:
        assert mailbox.select() > 0


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_untrusted_certificate_is_a_tls_error(
    dovecot_tls_server: DovecotServer, security: str, login_calls: list[str]
) -> None:
    username, password = dovecot_tls_server.add_user("untrusted")
    port = dovecot_tls_server.imaps_port if security == "ssl" else dovecot_tls_server.port
    assert port is not None
    # No ssl_context: the system trust store does not know the self-signed CA.
    config = MailboxConfig(dovecot_tls_server.host, port, security, username, password)  # type: ignore[arg-type]
    with pytest.raises(ImapTLSError, match="certificate verification failed"):
        ImapMailbox(config).connect()
    assert login_calls == []


# -- selecting and reading ----------------------------------------------------


def test_select_returns_uidvalidity(imap_account: ImapAccount) -> None:
    imap_account.append("INBOX", samples.plain())
    with ImapMailbox(config_for(imap_account)) as mailbox:
        uidvalidity = mailbox.select()
        assert mailbox.message_count == 1
    assert uidvalidity == imap_account.uidvalidity("INBOX")
    # UIDVALIDITY is stable across sessions; that is what makes UID tracking safe.
    with ImapMailbox(config_for(imap_account)) as mailbox:
        assert mailbox.select() == uidvalidity


def test_uidvalidity_changes_when_folder_is_recreated(imap_account: ImapAccount) -> None:
    imap_account.create_folder("Support")
    config = config_for(imap_account, folder="Support")
    with ImapMailbox(config) as mailbox:
        before = mailbox.select()
    imap_account.delete_folder("Support")
    imap_account.create_folder("Support")
    with ImapMailbox(config) as mailbox:
        assert mailbox.select() != before


def test_select_missing_folder_is_a_folder_error(imap_account: ImapAccount) -> None:
    with (
        ImapMailbox(config_for(imap_account, folder="Nope")) as mailbox,
        pytest.raises(ImapFolderError),
    ):
        mailbox.select()


def test_uids_after_filters_the_star_quirk(imap_account: ImapAccount) -> None:
    uids = [imap_account.append("INBOX", samples.plain(f"m{i}")) for i in range(3)]
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        assert mailbox.uids_after(0) == uids
        assert mailbox.uids_after(uids[0]) == uids[1:]
        # "UID n:*" with n above the highest UID still matches the highest message.
        assert mailbox.uids_after(uids[-1]) == []
        assert mailbox.uids_after(uids[-1] + 100) == []
        assert mailbox.uids_after(2**32 - 1) == []


def test_uids_after_on_empty_folder(imap_account: ImapAccount) -> None:
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        assert mailbox.uids_after(0) == []


def test_operations_require_select(imap_account: ImapAccount) -> None:
    with ImapMailbox(config_for(imap_account)) as mailbox, pytest.raises(RuntimeError):
        mailbox.uids_after(0)


def test_fetch_returns_exact_bytes_and_leaves_messages_unseen(imap_account: ImapAccount) -> None:
    raws = [samples.plain("one"), samples.shift_jis(), samples.raw_8bit_headers()]
    uids = [imap_account.append("INBOX", raw) for raw in raws]
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        fetched = mailbox.fetch(uids)
    assert fetched == dict(zip(uids, raws, strict=True))
    assert all("\\Seen" not in flags for flags in imap_account.flags().values())


def test_fetch_skips_missing_uids(imap_account: ImapAccount) -> None:
    uid = imap_account.append("INBOX", samples.plain())
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        assert list(mailbox.fetch([uid, uid + 50])) == [uid]
        assert mailbox.fetch([]) == {}


def test_mark_seen(imap_account: ImapAccount) -> None:
    first = imap_account.append("INBOX", samples.plain("a"), flags=["\\Flagged"])
    second = imap_account.append("INBOX", samples.plain("b"))
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        mailbox.mark_seen([first])
    assert imap_account.flags() == {
        first: frozenset({"\\Seen", "\\Flagged"}),
        second: frozenset(),
    }


# -- moving without ever deleting ---------------------------------------------


def test_move_creates_processed_folder_and_deletes_nothing(imap_account: ImapAccount) -> None:
    raws = [samples.plain("keep"), samples.plain("move 1"), samples.plain("move 2")]
    keep, *moved = [imap_account.append("INBOX", raw) for raw in raws]
    assert PROCESSED not in imap_account.folders()
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        assert mailbox.capabilities() >= {"MOVE"}
        mailbox.move(moved)
    assert PROCESSED in imap_account.folders()
    assert list(imap_account.messages("INBOX").values()) == [raws[0]]
    assert sorted(imap_account.messages(PROCESSED).values()) == sorted(raws[1:])
    # MOVE must not leave \Deleted tombstones behind in either folder.
    for folder in ("INBOX", PROCESSED):
        assert all("\\Deleted" not in f for f in imap_account.flags(folder).values())
    assert keep in imap_account.flags("INBOX")


def test_move_into_existing_folder(imap_account: ImapAccount) -> None:
    imap_account.create_folder("Done")
    uid = imap_account.append("INBOX", samples.plain())
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        mailbox.move([uid], "Done")
    assert imap_account.messages("INBOX") == {}
    assert len(imap_account.messages("Done")) == 1


def test_move_without_move_capability_copies_and_marks_seen(
    imap_account: ImapAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_has_capability = IMAPClient.has_capability

    def no_move(self: IMAPClient, capability: str) -> bool:
        return capability.upper() != "MOVE" and real_has_capability(self, capability)

    monkeypatch.setattr(IMAPClient, "has_capability", no_move)
    raw = samples.plain("old server")
    uid = imap_account.append("INBOX", raw)
    with ImapMailbox(config_for(imap_account)) as mailbox:
        mailbox.select()
        mailbox.move([uid])
    # The original stays (never \Deleted, never expunged) and is marked handled.
    assert imap_account.messages("INBOX") == {uid: raw}
    assert imap_account.flags("INBOX") == {uid: frozenset({"\\Seen"})}
    assert list(imap_account.messages(PROCESSED).values()) == [raw]


def test_move_requires_a_target(imap_account: ImapAccount) -> None:
    with ImapMailbox(config_for(imap_account, processed_folder=None)) as mailbox:
        mailbox.select()
        with pytest.raises(ValueError, match="processed_folder"):
            mailbox.move([1])


# -- test_connection ----------------------------------------------------------


def test_test_connection_ok(imap_account: ImapAccount) -> None:
    imap_account.append("INBOX", samples.plain())
    result = test_connection(config_for(imap_account))
    assert result.ok
    assert result.error is None
    assert result.uidvalidity == imap_account.uidvalidity()
    assert result.message_count == 1
    assert result.processed_folder_exists is False
    assert "IMAP4REV1" in result.capabilities
    # Testing a connection must not create folders or touch flags.
    assert PROCESSED not in imap_account.folders()


def test_test_connection_reports_auth_error(imap_account: ImapAccount) -> None:
    result = test_connection(config_for(imap_account, password="nope"))
    assert not result.ok
    assert result.error_kind == "auth"
    assert result.error


def test_test_connection_reports_a_refused_connection(closed_port: int) -> None:
    result = test_connection(MailboxConfig("127.0.0.1", closed_port, "none", "u", "p"))
    assert (result.ok, result.error_kind) == (False, "refused")
    assert result.error == "the connection was refused"


# -- configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"security": "tls"}, "security must be one of"),
        ({"port": 0}, "invalid port"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"host": ""}, "host is required"),
        ({"processed_folder": "INBOX"}, "processed_folder must differ"),
    ],
)
def test_invalid_config_is_rejected(overrides: dict[str, object], message: str) -> None:
    values: dict[str, object] = {
        "host": "imap.example.com",
        "port": 993,
        "security": "ssl",
        "username": "u",
        "password": "p",
    }
    values.update(overrides)
    with pytest.raises(ValueError, match=message):
        MailboxConfig(**values)  # type: ignore[arg-type]


def test_password_is_not_in_repr() -> None:
    config = MailboxConfig("imap.example.com", 993, "ssl", "u", "s3cret-value")
    assert "s3cret-value" not in repr(config)
