"""Mailbox settings cannot leak the stored password or probe the network (issue 14, hole 3).

A listener of the test's own on 127.0.0.1 plays the attacker's server and records every
byte it receives. Connection tests run as tasks on a real worker (in a thread of this
process) and their outcome is read back through ``tasks/status/{id}``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rest_framework.test import APIClient

from integrations.email import services as email_services
from integrations.models import Mailbox, MailboxAuthMethod, OAuthStatus
from tests.integrations.factories import MailboxFactory
from tests.support.dovecot import ImapAccount
from tickets.models import Organization, Role

URL = "/api/v1/integrations/mailboxes"
STORED_PASSWORD = "s3cret-stored-pa55word"
BANNER = "internal-billing-db-7.4.2 ready"


class Listener:
    """A TCP server that greets with ``greeting`` (or says nothing) and records what it gets."""

    def __init__(self, greeting: bytes | None) -> None:
        self.greeting = greeting
        self.received = bytearray()
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.5)
            if self.greeting is not None:
                conn.sendall(self.greeting)
            deadline = time.monotonic() + 15
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.received += data
                for line in data.split(b"\r\n"):
                    tag = line.split(b" ", 1)[0]
                    if tag and self.greeting and self.greeting.startswith(b"* OK"):
                        # Answer like a lax IMAP server, so a client would go on to LOGIN.
                        conn.sendall(
                            b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n"
                        )

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def listener_factory() -> Iterator[Any]:
    made: list[Listener] = []

    def make(greeting: bytes | None = b"* OK IMAP4rev1 ready\r\n") -> Listener:
        made.append(Listener(greeting))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


@pytest.fixture
def admin_api(make_user: Any, make_api_client: Any, organization: Organization) -> APIClient:
    return make_api_client(make_user(organization=organization, role=Role.ADMIN, username="ada"))


def _payload(organization: Organization, **overrides: Any) -> dict[str, Any]:
    return {
        "organization": organization.pk,
        "name": "Support",
        "host": "imap.example.com",
        "port": 993,
        "security": "ssl",
        "username": "support@example.com",
        "password": STORED_PASSWORD,
        **overrides,
    }


def _task_result(client: APIClient, task_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"/api/v1/tasks/status/{task_id}")
        if answer.status_code == 200 and answer.json()["state"] in ("SUCCESS", "FAILURE"):
            return answer.json()
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} did not finish in {timeout}s")


@pytest.mark.dovecot
@pytest.mark.django_db(transaction=True)
def test_the_password_exfiltration_patch_from_the_issue_gets_nothing(
    admin_api: APIClient,
    organization: Organization,
    imap_account: ImapAccount,
    listener_factory: Any,
    inthread_worker: Any,
) -> None:
    """Issue 14: an admin who does not know the password points the mailbox at a listener
    of theirs and presses test-connection; the listener used to get the LOGIN line."""
    listener = listener_factory()
    created = admin_api.post(
        URL,
        _payload(
            organization,
            host=imap_account.host,
            port=imap_account.port,
            security="none",
            username=imap_account.username,
            password=imap_account.password,
        ),
        format="json",
    )
    mailbox_id = created.json()["id"]
    stored = Mailbox.objects.get().password

    for change in (
        {"host": "127.0.0.1", "port": listener.port},
        {"port": listener.port},
        {"security": "ssl"},
        {"username": "someone-else"},
    ):
        refused = admin_api.patch(f"{URL}/{mailbox_id}", change, format="json")
        assert refused.status_code == 400, change
        assert "password" in refused.json(), change
    unchanged = Mailbox.objects.get()
    assert (unchanged.host, unchanged.port) == (imap_account.host, imap_account.port)
    accepted = admin_api.post(f"{URL}/{mailbox_id}/test-connection")

    assert accepted.status_code == 202
    result = _task_result(admin_api, accepted.json()["task_id"])
    assert result["name"] == "integrations.tasks.test_mailbox_connection"
    assert result["result"]["ok"] is True  # the real mailbox, with its real password
    assert listener.connections == 0
    assert stored.encode() not in bytes(listener.received)

    # With a password of their own, the listener gets that one, never the stored one.
    moved = admin_api.patch(
        f"{URL}/{mailbox_id}",
        {"host": "127.0.0.1", "port": listener.port, "password": "attackers-own"},
        format="json",
    )
    assert moved.status_code == 200, moved.content
    result = _task_result(
        admin_api, admin_api.post(f"{URL}/{mailbox_id}/test-connection").json()["task_id"]
    )
    assert result["result"]["ok"] is False
    assert b"attackers-own" in bytes(listener.received)
    assert stored.encode() not in bytes(listener.received)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("host", "security", "field"),
    [
        ("127.0.0.1", "ssl", "host"),
        ("localhost", "ssl", "host"),
        ("169.254.169.254", "ssl", "host"),
        ("10.1.2.3", "starttls", "host"),
        ("192.168.0.10", "ssl", "host"),
        ("100.64.0.1", "ssl", "host"),
        ("::1", "ssl", "host"),
        ("fd00::1", "ssl", "host"),
        ("fe80::1", "ssl", "host"),
        ("::ffff:169.254.169.254", "ssl", "host"),
        ("no-such-host.invalid", "ssl", "host"),
        ("93.184.216.34", "none", "security"),
    ],
)
def test_internal_targets_and_plain_text_are_refused_outside_debug(
    admin_api: APIClient,
    organization: Organization,
    settings: Any,
    host: str,
    security: str,
    field: str,
) -> None:
    settings.DEBUG = False
    settings.ZENITH_IMAP_ALLOW_PLAINTEXT = settings.ZENITH_IMAP_ALLOW_PRIVATE_HOSTS = False

    answer = admin_api.post(
        URL, _payload(organization, host=host, security=security), format="json"
    )

    assert answer.status_code == 400
    assert field in answer.json(), answer.json()
    assert not Mailbox.objects.exists()


@pytest.mark.django_db
def test_public_hosts_pass_and_the_settings_allow_the_rest(
    admin_api: APIClient, organization: Organization, settings: Any
) -> None:
    settings.DEBUG = False
    settings.ZENITH_IMAP_ALLOW_PLAINTEXT = settings.ZENITH_IMAP_ALLOW_PRIVATE_HOSTS = False
    public = admin_api.post(URL, _payload(organization, host="93.184.216.34"), format="json")
    moved = admin_api.patch(
        f"{URL}/{public.json()['id']}",
        {"host": "169.254.169.254", "password": STORED_PASSWORD},
        format="json",
    )
    settings.ZENITH_IMAP_ALLOW_PRIVATE_HOSTS = True
    private = admin_api.post(
        URL, _payload(organization, name="Local", host="10.1.2.3"), format="json"
    )
    settings.ZENITH_IMAP_ALLOW_PLAINTEXT = True
    plain = admin_api.post(
        URL, _payload(organization, name="Plain", host="10.1.2.4", security="none"), format="json"
    )

    assert public.status_code == 201, public.content
    assert moved.status_code == 400
    assert "host" in moved.json()
    assert Mailbox.objects.get(name="Support").host == "93.184.216.34"
    assert (private.status_code, plain.status_code) == (201, 201)


@pytest.mark.django_db
def test_the_address_is_checked_again_when_connecting(
    organization: Organization, settings: Any, listener_factory: Any
) -> None:
    """DNS rebinding: the name resolved to a public address when saved, now to 127.0.0.1."""
    listener = listener_factory()
    mailbox = Mailbox.objects.create(
        organization=organization,
        name="Rebound",
        host="127.0.0.1",
        port=listener.port,
        security="none",
        username="support@example.com",
        password=STORED_PASSWORD,
    )
    settings.DEBUG = False
    settings.ZENITH_IMAP_ALLOW_PRIVATE_HOSTS = False

    tested = email_services.mailbox_test_connection(mailbox=mailbox)
    polled = email_services.mailbox_poll(mailbox=mailbox)

    assert (tested.ok, tested.error_kind) == (False, "destination")
    assert polled.error_kind == "destination"
    time.sleep(0.3)
    assert b"LOGIN" not in bytes(listener.received).upper()
    assert STORED_PASSWORD.encode() not in bytes(listener.received)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("greeting", "kind"),
    [
        (f"HTTP/1.1 400 Bad Request\r\nServer: {BANNER}\r\n\r\n".encode(), "not_imap"),
        (f"SSH-2.0-{BANNER}\r\n".encode(), "not_imap"),
        (None, "timeout"),
        ("closed", "refused"),
    ],
)
def test_connection_errors_name_the_kind_and_never_echo_the_banner(
    admin_api: APIClient,
    organization: Organization,
    make_user: Any,
    make_api_client: Any,
    other_organization: Organization,
    listener_factory: Any,
    settings: Any,
    inthread_worker: Any,
    greeting: Any,
    kind: str,
) -> None:
    settings.ZENITH_IMAP_TEST_TIMEOUT = 1.0
    if greeting == "closed":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    else:
        port = listener_factory(greeting).port
    mailbox = email_services.mailbox_create(
        organization=organization,
        name="Probe",
        host="127.0.0.1",
        port=port,
        security="none",
        username="u",
        password=STORED_PASSWORD,
    )
    outsider = make_api_client(make_user(organization=other_organization, role=Role.ADMIN))

    started = time.monotonic()
    accepted = admin_api.post(f"{URL}/{mailbox.pk}/test-connection/")
    answered_in = time.monotonic() - started
    task = _task_result(admin_api, accepted.json()["task_id"])

    assert accepted.status_code == 202
    assert answered_in < 1.0, "the web request does not wait for the remote server"
    assert task["state"] == "SUCCESS"
    assert task["result"]["error_kind"] == kind
    assert task["result"]["ok"] is False
    assert BANNER not in str(task)
    assert outsider.post(f"{URL}/{mailbox.pk}/test-connection").status_code == 404
    assert outsider.get(f"/api/v1/tasks/status/{accepted.json()['task_id']}").status_code == 404


def _connected_oauth_mailbox(organization: Organization) -> Mailbox:
    """An OAuth2 mailbox with a grant, and a password left from its password-login days."""
    return MailboxFactory(
        organization=organization,
        host="imap.example.com",
        port=993,
        username="support@example.com",
        password=STORED_PASSWORD,
        auth_method=MailboxAuthMethod.OAUTH2,
        oauth_provider="google",
        oauth_refresh_token="refresh-token-of-the-owner",
        oauth_access_token="access-token-of-the-owner",
        oauth_account="support@example.com",
        oauth_status=OAuthStatus.CONNECTED,
    )


def _assert_grant_and_password_dropped(mailbox: Mailbox) -> None:
    mailbox.refresh_from_db()
    assert mailbox.host == "imap.example.net"
    assert (mailbox.oauth_refresh_token, mailbox.oauth_access_token) == ("", "")
    assert mailbox.oauth_status == OAuthStatus.NOT_CONNECTED  # the owner consents anew
    assert mailbox.password == ""  # switching back to password login sends nothing old


@pytest.mark.django_db
def test_an_oauth_mailbox_moves_without_a_password_and_loses_its_grant(
    admin_api: APIClient, organization: Organization
) -> None:
    """An OAuth2 mailbox has no password to give: moving it drops what it could send there."""
    mailbox = _connected_oauth_mailbox(organization)

    moved = admin_api.patch(f"{URL}/{mailbox.pk}", {"host": "imap.example.net"}, format="json")

    assert moved.status_code == 200, moved.content
    assert moved.json()["has_password"] is False
    _assert_grant_and_password_dropped(mailbox)
    # Back to password login: the request that does it must now bring a password.
    back = admin_api.patch(f"{URL}/{mailbox.pk}", {"auth_method": "password"}, format="json")
    assert back.status_code == 200
    assert back.json()["has_password"] is False


@pytest.mark.django_db
def test_the_admin_form_follows_the_same_rules_as_the_api(
    client: Any, make_user: Any, organization: Organization
) -> None:
    client.force_login(make_user(username="root", is_staff=True, is_superuser=True))
    mailbox = _connected_oauth_mailbox(organization)
    page = f"/admin/integrations/mailbox/{mailbox.pk}/change/"
    form = {
        "organization": organization.pk,
        "name": mailbox.name,
        "host": "imap.example.net",
        "port": 993,
        "security": "ssl",
        "username": "support@example.com",
        "new_password": "",
        "folder": "INBOX",
        "processed_folder": "",
        "enabled": "on",
        "auth_method": "oauth2",
        "oauth_provider": "google",
    }

    saved = client.post(page, form)

    assert saved.status_code == 302, saved.content.decode()[:3000]
    _assert_grant_and_password_dropped(mailbox)
    # A password mailbox still needs its password to move.
    password_box = MailboxFactory(organization=organization, password=STORED_PASSWORD)
    refused = client.post(
        f"/admin/integrations/mailbox/{password_box.pk}/change/",
        {
            **form,
            "name": password_box.name,
            "username": password_box.username,
            "auth_method": "password",
            "oauth_provider": "",
        },
    )
    assert refused.status_code == 200
    assert "needs the mailbox password again" in refused.content.decode()
    password_box.refresh_from_db()
    assert password_box.host == "imap.example.test"


CALLBACK = "/api/v1/integrations/mailboxes/oauth/callback"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (f"state={'s' * 100_000}&code=c", "state"),
        ("state=%00%FF%FE&code=c", "state"),
        ("state={state}&code=%00%C0%AF", "code"),
        (f"state={{state}}&code={'c' * 10_000}", "code"),
        (f"state={{state}}&error=%3Cscript%3E{'e' * 100_000}", "error"),
    ],
    ids=["oversized-state", "nul-state", "nul-code", "oversized-code", "oversized-error"],
)
def test_a_forged_consent_callback_is_400_naming_the_field_and_spends_no_state(
    organization: Organization, make_user: Any, query: str, field: str
) -> None:
    from integrations.models import MailboxOAuthState
    from integrations.oauth_state import state_new

    admin = make_user(organization=organization, role=Role.ADMIN)
    mailbox = MailboxFactory(
        organization=organization, auth_method=MailboxAuthMethod.OAUTH2, oauth_provider="generic"
    )
    started = MailboxOAuthState.objects.create(
        state=state_new(),
        mailbox=mailbox,
        user=admin,
        code_verifier="v" * 43,
        redirect_uri="http://testserver" + CALLBACK,
    )
    client = APIClient()
    client.force_authenticate(admin)

    answer = client.get(f"{CALLBACK}?{query.format(state=started.state)}")

    assert answer.status_code == 400
    assert field in answer.json()
    # The page repeats none of the forged values.
    assert len(answer.content) < 2_000
    assert "<script" not in answer.content.decode()
    started.refresh_from_db()
    assert started.consumed_at is None
    mailbox.refresh_from_db()
    assert mailbox.oauth_status != OAuthStatus.CONNECTED
