"""Pytest plugin that runs a real, throw-away Dovecot IMAP server for tests."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from imapclient import IMAPClient

REQUIRE_SERVICES_ENV = "ZENITH_REQUIRE_SERVICES"
HOST = "127.0.0.1"
# Debian ships the binary in /usr/sbin, which is often not on a non-root PATH.
DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
GREETING = "Zenith test Dovecot ready."

# Usernames end up in file paths (mail_location and the per-user passwd-file).
_USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+@-]{0,63}$")
_APPENDUID_RE = re.compile(rb"\[APPENDUID \d+ (\d+)\]")

UserRef = str | tuple[str, str]


class DovecotError(RuntimeError):
    """Dovecot could not be configured, started or stopped."""


def find_dovecot() -> str | None:
    """Return the path of the dovecot binary, or None if it is not installed."""
    found = shutil.which("dovecot")
    if found:
        return found
    for candidate in DOVECOT_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def services_required() -> bool:
    """Return True when missing external services must fail tests instead of skipping them."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "").strip().lower() in {"1", "true", "yes"}


def _free_port(host: str = HOST) -> int:
    """Return a currently unused TCP port on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """Return True while pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Dovecot daemonizes, so the master is not our child and we cannot reap it;
    # a zombie that init has not collected yet has already exited.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _write_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for localhost/127.0.0.1 and return (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class DovecotServer:
    """One Dovecot instance living entirely in its own temporary directory."""

    def __init__(
        self,
        *,
        binary: str,
        tls: bool = False,
        host: str = HOST,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        self.binary = binary
        # With an introspection URL, XOAUTH2/OAUTHBEARER logins are checked against it
        # (Dovecot's oauth2 passdb); passwords keep working for the tests' own sessions.
        self.oauth2_introspection_url = oauth2_introspection_url
        self.host = host
        self.tls = tls
        self.port = 0
        self.ca_file: Path | None = None
        # Unix socket paths are limited to ~108 bytes, so keep the root short.
        tmp = "/tmp" if os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="zenith-dovecot-", dir=tmp))
        # mkdtemp makes 0700; the mail user must be able to traverse it.
        self.root.chmod(0o755)
        self.config_path = self.root / "dovecot.conf"
        self.passwd_dir = self.root / "passwd.d"
        self.base_dir = self.root / "run"
        self.state_dir = self.root / "state"
        self.mail_dir = self.root / "mail"
        self.home_dir = self.root / "home"
        self.log_path = self.root / "dovecot.log"
        self._users: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._imaps_port = 0
        self._cert_key: tuple[Path, Path] | None = None
        self._uid, self._gid, self._internal_user, self._login_user = self._identity()

    # -- lifecycle -------------------------------------------------------

    @staticmethod
    def _identity() -> tuple[int, int, str, str]:
        """Return (mail uid, mail gid, internal user, login user) for the static userdb."""
        mail = pwd.getpwnam("mail")
        internal = "dovecot" if _user_exists("dovecot") else "mail"
        login = "dovenull" if _user_exists("dovenull") else internal
        return mail.pw_uid, mail.pw_gid, internal, login

    @property
    def imaps_port(self) -> int | None:
        """Implicit-TLS port, only for a TLS-enabled server."""
        return self._imaps_port if self.tls else None

    def start(self, *, timeout: float = 20.0, attempts: int = 3) -> None:
        """Write the configuration, start Dovecot and wait until IMAP answers."""
        for directory in (
            self.base_dir,
            self.state_dir,
            self.mail_dir,
            self.home_dir,
            self.passwd_dir,
        ):
            directory.mkdir(exist_ok=True)
        for directory in (self.mail_dir, self.home_dir):
            os.chown(directory, self._uid, self._gid)
        if self.tls:
            cert, key = _write_self_signed_cert(self.root)
            self.ca_file = cert
            self._cert_key = (cert, key)
        last_error: DovecotError | None = None
        for _ in range(attempts):
            # Another process may grab the port between probing and binding.
            self.port = _free_port(self.host)
            self._imaps_port = _free_port(self.host) if self.tls else 0
            self.config_path.write_text(self._render_config())
            try:
                self._launch(timeout=timeout)
                atexit.register(self.stop)
                return
            except DovecotError as exc:
                last_error = exc
                self.stop()
                if "Address already in use" not in str(exc):
                    break
        assert last_error is not None
        raise last_error

    def _launch(self, *, timeout: float) -> None:
        """Start the daemon and block until it greets on the IMAP port."""
        check = subprocess.run(
            [self.binary, "-c", str(self.config_path), "-n"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        # dovecot -n only parses the config; fail early with its readable message.
        if check.returncode != 0:
            raise DovecotError(f"invalid dovecot config: {check.stderr.strip()}")
        # The daemon inherits the launcher's stdio; pipes would never reach EOF.
        startup_log = self.root / "startup.log"
        with startup_log.open("wb") as out:
            started = subprocess.run(
                [self.binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        if started.returncode != 0:
            output = startup_log.read_text(errors="replace").strip()
            raise DovecotError(
                f"dovecot exited with {started.returncode}: {output}\n{self.log_tail()}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._greets():
                self._pid = self._read_pid()
                return
            time.sleep(0.05)
        raise DovecotError(f"dovecot did not answer on {self.host}:{self.port}\n{self.log_tail()}")

    def _greets(self) -> bool:
        """Return True once the IMAP listener sends our greeting."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return GREETING.encode() in sock.recv(512)
        except OSError:
            return False

    def _read_pid(self) -> int | None:
        """Return the master pid Dovecot wrote into base_dir."""
        try:
            return int((self.base_dir / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self, *, timeout: float = 15.0) -> None:
        """Stop Dovecot by the pid in master.pid and wait for it to exit."""
        pid = self._read_pid() or self._pid
        self._pid = None
        if pid is None or not _pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.05)
        # Children notice the master's death and exit on their own.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines of the Dovecot log for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no dovecot log)"

    # -- configuration ---------------------------------------------------

    def _render_config(self) -> str:
        """Return a self-contained dovecot.conf that shares nothing with a system Dovecot."""
        ssl_block = "ssl = no"
        imaps_port = 0
        if self.tls:
            assert self._cert_key is not None
            cert, key = self._cert_key
            ssl_block = (
                f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\nssl_min_protocol = TLSv1.2"
            )
            imaps_port = self._imaps_port
        mechanisms = "plain login"
        oauth2_passdb = ""
        if self.oauth2_introspection_url:
            mechanisms = "plain login xoauth2 oauthbearer"
            oauth2_conf = self.root / "dovecot-oauth2.conf.ext"
            oauth2_conf.write_text(
                "introspection_mode = post\n"
                f"introspection_url = {self.oauth2_introspection_url}\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n",
                encoding="utf-8",
            )
            oauth2_passdb = (
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {oauth2_conf}\n}}\n"
            )
        return f"""\
# Generated by tests/support/dovecot.py; nothing is included from /etc/dovecot.
instance_name = zenith-test-{self.port}
listen = {self.host}
protocols = imap
base_dir = {self.base_dir}
state_dir = {self.state_dir}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
login_greeting = {GREETING}
{ssl_block}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_verbose = yes
# Wrong-password tests should not slow down the suite.
auth_failure_delay = 0
default_internal_user = {self._internal_user}
default_login_user = {self._login_user}
first_valid_uid = {self._uid}
first_valid_gid = {self._gid}
mail_location = maildir:{self.mail_dir}/%u
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
}}
# One passwd-file per user: Dovecot stats a passwd-file at most once per second,
# so users appended to a shared file could stay invisible to the next login.
# A new path is always read fresh; an unknown user simply has no file.
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {self.passwd_dir}/%u
}}
{oauth2_passdb}userdb {{
  driver = static
  args = uid={self._uid} gid={self._gid} home={self.home_dir}/%u
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {imaps_port}
  }}
}}
service anvil {{
  # No socket means no anvil auth penalty (escalating delays after failures).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _write_passwd(self, username: str, password: str) -> None:
        """Atomically write the user's passwd-file so auth never reads half a line."""
        tmp = self.passwd_dir / f".{username}.tmp"
        tmp.write_text(f"{username}:{{PLAIN}}{password}::::::\n", encoding="utf-8")
        tmp.chmod(0o644)
        os.replace(tmp, self.passwd_dir / username)

    # -- users -----------------------------------------------------------

    def add_user(self, name: str = "user", password: str | None = None) -> tuple[str, str]:
        """Create a fresh user (suffixing name if taken) and return (username, password)."""
        if not _USERNAME_RE.match(name):
            raise ValueError(f"unsupported test username: {name!r}")
        password = secrets.token_urlsafe(12) if password is None else password
        if not password or any(ch in password for ch in ":\r\n\t\0"):
            raise ValueError("test passwords must be non-empty without ':' or control characters")
        with self._lock:
            username = name
            counter = 1
            while username in self._users:
                counter += 1
                username = f"{name}-{counter}"
            self._users[username] = password
            self._write_passwd(username, password)
        return username, password

    def password(self, username: str) -> str:
        """Return the password of a user created with add_user."""
        return self._users[username]

    def _credentials(self, user: UserRef) -> tuple[str, str]:
        """Accept a username or an add_user() tuple and return (username, password)."""
        if isinstance(user, tuple):
            return user
        return user, self._users[user]

    # -- helpers acting as a mail client ---------------------------------

    @contextlib.contextmanager
    def client(self, user: UserRef) -> Iterator[IMAPClient]:
        """Yield a logged-in IMAPClient for user."""
        username, password = self._credentials(user)
        imap = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
        try:
            imap.login(username, password)
            yield imap
        finally:
            with contextlib.suppress(Exception):
                imap.logout()

    def append(
        self,
        user: UserRef,
        folder: str,
        raw: bytes,
        flags: Iterable[str | bytes] = (),
        *,
        msg_time: dt.datetime | None = None,
    ) -> int:
        """APPEND raw to folder (created if missing) and return the new message's UID."""
        with self.client(user) as imap:
            if not imap.folder_exists(folder):
                imap.create_folder(folder)
            response = imap.append(folder, raw, flags=tuple(flags), msg_time=msg_time)
        match = _APPENDUID_RE.search(response or b"")
        if match is None:
            raise DovecotError(f"APPEND did not return APPENDUID: {response!r}")
        return int(match.group(1))

    def flags(self, user: UserRef, folder: str = "INBOX") -> dict[int, frozenset[str]]:
        """Return {uid: flags} (minus \\Recent) for every message in folder, changing nothing."""
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search("ALL")
            if not uids:
                return {}
            data = imap.fetch(uids, ["FLAGS"])
        # \\Recent is per-session noise, not a stored flag; leaving it in breaks equality checks.
        return {
            uid: frozenset(_to_str(flag) for flag in item[b"FLAGS"]) - {"\\Recent"}
            for uid, item in data.items()
        }

    def messages(self, user: UserRef, folder: str = "INBOX") -> dict[int, bytes]:
        """Return {uid: raw bytes} for every message in folder, without setting \\Seen."""
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search("ALL")
            if not uids:
                return {}
            data = imap.fetch(uids, ["BODY.PEEK[]"])
        return {uid: item[b"BODY[]"] for uid, item in data.items()}

    def folders(self, user: UserRef) -> list[str]:
        """Return the names of all folders of user."""
        with self.client(user) as imap:
            return sorted(name for _flags, _sep, name in imap.list_folders())

    def create_folder(self, user: UserRef, folder: str) -> None:
        """Create folder for user."""
        with self.client(user) as imap:
            imap.create_folder(folder)

    def delete_folder(self, user: UserRef, folder: str) -> None:
        """Delete folder of user."""
        with self.client(user) as imap:
            imap.delete_folder(folder)

    def uidvalidity(self, user: UserRef, folder: str = "INBOX") -> int:
        """Return the UIDVALIDITY of folder as Dovecot reports it."""
        with self.client(user) as imap:
            status = imap.folder_status(folder, [b"UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def ssl_context(self) -> ssl.SSLContext:
        """Return a client context that trusts this server's self-signed certificate."""
        if self.ca_file is None:
            raise DovecotError("this Dovecot instance was started without TLS")
        return ssl.create_default_context(cafile=str(self.ca_file))


@dataclass(frozen=True)
class ImapAccount:
    """A fresh IMAP user on a running DovecotServer, with bound helpers."""

    server: DovecotServer
    username: str
    password: str

    @property
    def host(self) -> str:
        """Server host."""
        return self.server.host

    @property
    def port(self) -> int:
        """Server plain IMAP port."""
        return self.server.port

    @property
    def credentials(self) -> tuple[str, str]:
        """(username, password) as accepted by the server helpers."""
        return self.username, self.password

    def append(
        self,
        folder: str,
        raw: bytes,
        flags: Iterable[str | bytes] = (),
        *,
        msg_time: dt.datetime | None = None,
    ) -> int:
        """APPEND raw to folder and return its UID."""
        return self.server.append(self.credentials, folder, raw, flags, msg_time=msg_time)

    def flags(self, folder: str = "INBOX") -> dict[int, frozenset[str]]:
        """Return {uid: flags} of folder."""
        return self.server.flags(self.credentials, folder)

    def messages(self, folder: str = "INBOX") -> dict[int, bytes]:
        """Return {uid: raw bytes} of folder."""
        return self.server.messages(self.credentials, folder)

    def folders(self) -> list[str]:
        """Return all folder names."""
        return self.server.folders(self.credentials)

    def create_folder(self, folder: str) -> None:
        """Create folder."""
        self.server.create_folder(self.credentials, folder)

    def delete_folder(self, folder: str) -> None:
        """Delete folder."""
        self.server.delete_folder(self.credentials, folder)

    def uidvalidity(self, folder: str = "INBOX") -> int:
        """Return the server's UIDVALIDITY for folder."""
        return self.server.uidvalidity(self.credentials, folder)


def _user_exists(name: str) -> bool:
    """Return True if a system user called name exists."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _to_str(value: str | bytes) -> str:
    """Return value as str, decoding IMAP atoms as ASCII."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _unavailable(reason: str) -> None:
    """Skip, or fail when ZENITH_REQUIRE_SERVICES=1 says services are mandatory."""
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1 requires it)", pytrace=False)
    pytest.skip(reason)


def _start_server(*, tls: bool, oauth2_introspection_url: str | None = None) -> DovecotServer:
    """Start a DovecotServer or skip/fail the requesting tests."""
    binary = find_dovecot()
    if binary is None:
        _unavailable("dovecot is not installed (apt-get install dovecot-imapd)")
        raise AssertionError("unreachable")
    if os.geteuid() != 0:
        # Mail is stored as the system "mail" user, which needs root to switch to.
        _unavailable("the Dovecot fixture must run as root")
    server = DovecotServer(
        binary=binary, tls=tls, oauth2_introspection_url=oauth2_introspection_url
    )
    try:
        server.start()
    except Exception as exc:
        log = server.log_tail()
        server.cleanup()
        # An installed but broken Dovecot is a real problem, not a reason to skip.
        pytest.fail(f"could not start dovecot: {exc}\n{log}", pytrace=False)
    return server


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    """A plain-text (ssl = no) Dovecot shared by the whole test session."""
    server = _start_server(tls=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def dovecot_tls_server() -> Iterator[DovecotServer]:
    """A Dovecot offering STARTTLS and implicit TLS with a self-signed certificate."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        _unavailable("the cryptography package is needed for the TLS Dovecot fixture")
    server = _start_server(tls=True)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def imap_account(dovecot_server: DovecotServer, request: pytest.FixtureRequest) -> ImapAccount:
    """A fresh IMAP user for one test, named after the test for readable server logs."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:40] or "user"
    username, password = dovecot_server.add_user(f"t-{base}".rstrip("-"))
    return ImapAccount(server=dovecot_server, username=username, password=password)


@pytest.fixture(scope="session")
def dovecot_oauth_server(oauth_server_session: Any) -> Iterator[DovecotServer]:
    """A plain-text Dovecot that also accepts XOAUTH2 tokens of the tests' OAuth2 server."""
    server = _start_server(
        tls=False, oauth2_introspection_url=oauth_server_session.introspection_url
    )
    try:
        yield server
    finally:
        server.cleanup()
