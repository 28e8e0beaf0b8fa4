"""OAuth2 mailboxes end to end: consent over HTTP, XOAUTH2 logins at a real Dovecot whose
oauth2 passdb asks the tests' own OAuth2 server, refresh, rotation and revoked consent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.utils import timezone
from rest_framework.test import APIClient

from integrations.email import services as email_services
from integrations.models import InboundEmail, Mailbox, MailboxOAuthState
from integrations.selectors import integrations_in_error_list
from tests.integrations.email.conftest import append_all
from tests.support import email_samples as samples
from tests.support.dovecot import DovecotServer, ImapAccount
from tests.support.oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer
from tickets.models import Organization, Role, Ticket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.dovecot]


@pytest.fixture(autouse=True)
def _oauth_client(settings: Any) -> None:
    settings.ZENITH_OAUTH_GENERIC_CLIENT_ID = CLIENT_ID
    settings.ZENITH_OAUTH_GENERIC_CLIENT_SECRET = CLIENT_SECRET
    # The tests' provider listens on plain HTTP on 127.0.0.1.
    settings.ZENITH_OAUTH_ALLOW_HTTP = True


@pytest.fixture
def account(dovecot_oauth_server: DovecotServer, request: pytest.FixtureRequest) -> ImapAccount:
    name = f"oa-{request.node.name[:30]}".replace("_", "-").replace("[", "-").rstrip("]-")
    username, password = dovecot_oauth_server.add_user(name)
    return ImapAccount(server=dovecot_oauth_server, username=username, password=password)


@pytest.fixture
def admin_api(make_user: Callable[..., Any], organization: Organization) -> tuple[Any, APIClient]:
    user = make_user(organization=organization, role=Role.ADMIN, username="ada")
    client = APIClient()
    client.force_authenticate(user)
    return user, client


def _create(api: APIClient, organization: Organization, account: ImapAccount, oauth: OAuthServer,
            **extra: Any) -> dict[str, Any]:  # fmt: skip
    body = {
        "organization": organization.pk,
        "name": extra.pop("name", "Support"),
        "host": account.host,
        "port": account.port,
        "security": "none",
        "username": account.username,
        "auth_method": "oauth2",
        "oauth_provider": "generic",
        "oauth_authorize_url": oauth.authorize_url,
        "oauth_token_url": oauth.token_url,
        "oauth_scopes": "imap offline_access",
        **extra,
    }
    response = api.post("/api/v1/integrations/mailboxes/", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def _consent(api: APIClient, mailbox_id: int, oauth: OAuthServer, user: str) -> dict[str, Any]:
    """Start consent, let the provider approve as `user`, come back to the callback."""
    started = api.post(f"/api/v1/integrations/mailboxes/{mailbox_id}/oauth/start")
    assert started.status_code == 200, started.json()
    oauth.consent_as(user)
    approval = requests.get(started.json()["authorize_url"], allow_redirects=False, timeout=10)
    assert approval.status_code == 302
    back = urlsplit(approval.headers["Location"])
    assert back.path == "/api/v1/integrations/mailboxes/oauth/callback"
    query = {key: values[0] for key, values in parse_qs(back.query).items()}
    response = api.get(back.path, query)
    assert response.status_code == 200, response.json()
    return response.json() | {"_query": query}


def test_consent_then_sync_over_xoauth2_refresh_and_rotation_lose_and_double_nothing(
    admin_api: tuple[Any, APIClient],
    organization: Organization,
    account: ImapAccount,
    oauth_server: OAuthServer,
) -> None:
    oauth_server.state.rotate_refresh_tokens = True
    _, api = admin_api
    created = _create(api, organization, account, oauth_server)
    assert created["has_password"] is False
    assert created["oauth_status"] == ""

    connected = _consent(api, created["id"], oauth_server, account.username)
    assert connected["oauth_status"] == "connected"
    assert connected["oauth_account"] == account.username
    assert connected["has_oauth_grant"] is True
    body = str(connected)
    mailbox = Mailbox.objects.get(pk=created["id"])
    # Tokens are stored, encrypted at rest, and never part of an answer.
    assert mailbox.oauth_refresh_token
    assert mailbox.oauth_refresh_token not in body
    assert mailbox.oauth_access_token not in body

    append_all(account, [samples.plain(subject=f"First {n}") for n in range(3)])
    report = email_services.mailbox_poll(mailbox=mailbox)
    assert (report.error_kind, report.ticket) == ("", 3)

    # The provider ends every access token early: the next poll's XOAUTH2 login is refused,
    # the token is refreshed (and the rotated refresh token saved), and the poll goes on.
    first_refresh = mailbox.oauth_refresh_token
    oauth_server.expire_access_tokens()
    append_all(account, [samples.plain(subject=f"Second {n}") for n in range(3)])
    report = email_services.mailbox_poll(mailbox=Mailbox.objects.get(pk=mailbox.pk))
    assert (report.error_kind, report.ticket) == ("", 3)
    mailbox.refresh_from_db()
    assert mailbox.oauth_refresh_token != first_refresh
    assert oauth_server.live_refresh_tokens(account.username) == [mailbox.oauth_refresh_token]

    # A cached token past its own expiry is refreshed before the login.
    Mailbox.objects.filter(pk=mailbox.pk).update(
        oauth_access_expires_at=timezone.now() - timedelta(seconds=1)
    )
    append_all(account, [samples.plain(subject="Third")])
    report = email_services.mailbox_poll(mailbox=Mailbox.objects.get(pk=mailbox.pk))
    assert (report.error_kind, report.ticket) == ("", 1)

    subjects = sorted(
        Ticket.objects.filter(organization=organization).values_list("subject", flat=True)
    )
    expected = [*(f"First {n}" for n in range(3)), *(f"Second {n}" for n in range(3)), "Third"]
    assert subjects == sorted(expected)
    assert InboundEmail.objects.filter(mailbox=mailbox).count() == 7
    assert oauth_server.state.token_requests == [
        "authorization_code",
        "refresh_token",
        "refresh_token",
    ]


def test_revoked_consent_marks_needs_consent_raises_the_alert_and_spares_other_mailboxes(
    admin_api: tuple[Any, APIClient],
    organization: Organization,
    account: ImapAccount,
    dovecot_oauth_server: DovecotServer,
    oauth_server: OAuthServer,
    make_mailbox: Callable[..., Mailbox],
) -> None:
    _, api = admin_api
    created = _create(api, organization, account, oauth_server)
    _consent(api, created["id"], oauth_server, account.username)
    username, password = dovecot_oauth_server.add_user("oa-password-neighbour")
    neighbour_account = ImapAccount(
        server=dovecot_oauth_server, username=username, password=password
    )
    neighbour = make_mailbox(neighbour_account, name="Neighbour")

    oauth_server.revoke(account.username)
    append_all(account, [samples.plain(subject="Never read")])
    append_all(neighbour_account, [samples.plain(subject="Still read")])
    report = email_services.mailbox_poll(mailbox=Mailbox.objects.get(pk=created["id"]))
    assert report.error_kind == "needs_consent"
    assert not report.transient

    mailbox = Mailbox.objects.get(pk=created["id"])
    assert mailbox.oauth_status == "needs_consent"
    assert (
        "invalid_grant" in mailbox.oauth_status_reason or "refused" in mailbox.oauth_status_reason
    )
    shown = api.get(f"/api/v1/integrations/mailboxes/{mailbox.pk}/").json()
    assert shown["oauth_status"] == "needs_consent"
    assert shown["last_error_kind"] == "needs_consent"
    # The integrations-in-error alert sees it; no more polls are queued for it.
    in_error = integrations_in_error_list(organization=organization, since=timezone.now())
    assert [row["id"] for row in in_error] == [mailbox.pk]
    queued = email_services.mailbox_poll_enqueue_all(organization=organization)
    assert str(mailbox.pk) not in queued
    assert str(neighbour.pk) in queued
    assert email_services.mailbox_poll(mailbox=neighbour).ticket == 1

    # Consent again and the mail waiting meanwhile arrives once.
    _consent(api, mailbox.pk, oauth_server, account.username)
    assert email_services.mailbox_poll(mailbox=Mailbox.objects.get(pk=mailbox.pk)).ticket == 1
    assert Ticket.objects.filter(subject="Never read").count() == 1


def test_consent_state_is_single_use_bound_to_its_admin_and_tenant(
    admin_api: tuple[Any, APIClient],
    organization: Organization,
    other_organization: Organization,
    account: ImapAccount,
    oauth_server: OAuthServer,
    make_user: Callable[..., Any],
) -> None:
    _, api = admin_api
    created = _create(api, organization, account, oauth_server)
    done = _consent(api, created["id"], oauth_server, account.username)

    again = api.get("/api/v1/integrations/mailboxes/oauth/callback", done["_query"])
    assert again.status_code == 400
    assert "already used" in str(again.json())

    # An admin of another organization cannot start consent for this mailbox...
    outsider = APIClient()
    outsider.force_authenticate(make_user(organization=other_organization, role=Role.ADMIN))
    response = outsider.post(f"/api/v1/integrations/mailboxes/{created['id']}/oauth/start")
    assert response.status_code == 404
    # ...nor finish one that this admin started (the state is bound to its user).
    started = api.post(f"/api/v1/integrations/mailboxes/{created['id']}/oauth/start").json()
    oauth_server.consent_as("attacker@example.com")
    approval = requests.get(started["authorize_url"], allow_redirects=False, timeout=10)
    query = {k: v[0] for k, v in parse_qs(urlsplit(approval.headers["Location"]).query).items()}
    stolen = outsider.get("/api/v1/integrations/mailboxes/oauth/callback", query)
    assert stolen.status_code == 400
    mailbox = Mailbox.objects.get(pk=created["id"])
    assert mailbox.oauth_account == account.username  # unchanged by the stolen callback

    # An operator (not admin) of the organization cannot start consent either.
    operator = APIClient()
    operator.force_authenticate(make_user(organization=organization, role=Role.OPERATOR))
    response = operator.post(f"/api/v1/integrations/mailboxes/{created['id']}/oauth/start")
    assert response.status_code == 404

    # An expired state is refused.
    MailboxOAuthState.objects.update(created_at=timezone.now() - timedelta(minutes=11))
    started = api.post(f"/api/v1/integrations/mailboxes/{created['id']}/oauth/start").json()
    MailboxOAuthState.objects.filter(consumed_at__isnull=True).update(
        created_at=timezone.now() - timedelta(minutes=11)
    )
    oauth_server.consent_as(account.username)
    approval = requests.get(started["authorize_url"], allow_redirects=False, timeout=10)
    query = {k: v[0] for k, v in parse_qs(urlsplit(approval.headers["Location"]).query).items()}
    expired = api.get("/api/v1/integrations/mailboxes/oauth/callback", query)
    assert expired.status_code == 400
    assert "expired" in str(expired.json())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"auth_method": "oauth2"}, "oauth_provider"),
        ({"auth_method": "oauth2", "oauth_provider": "generic"}, "oauth_authorize_url"),
        ({"auth_method": "password"}, "password"),
        ({"auth_method": "kerberos"}, "auth_method"),
    ],
)
def test_bad_auth_settings_answer_400_naming_the_field(
    admin_api: tuple[Any, APIClient], organization: Organization, body: dict[str, Any], field: str
) -> None:
    _, api = admin_api
    response = api.post(
        "/api/v1/integrations/mailboxes/",
        {"organization": organization.pk, "name": "X", "host": "imap.example.com",
         "username": "help@example.com", **body},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    assert field in response.json()
    assert not Mailbox.objects.exists()


def test_microsoft_and_google_mailboxes_default_their_imap_host_and_need_server_credentials(
    admin_api: tuple[Any, APIClient], organization: Organization, settings: Any
) -> None:
    _, api = admin_api
    for provider, host in (("microsoft", "outlook.office365.com"), ("google", "imap.gmail.com")):
        response = api.post(
            "/api/v1/integrations/mailboxes/",
            {"organization": organization.pk, "name": provider, "username": "help@example.com",
             "auth_method": "oauth2", "oauth_provider": provider},
            format="json",
        )  # fmt: skip
        assert response.status_code == 201, response.json()
        assert response.json()["host"] == host
        # No client id configured on the server: consent cannot start, and says which variable.
        started = api.post(f"/api/v1/integrations/mailboxes/{response.json()['id']}/oauth/start")
        assert started.status_code == 400
        assert f"ZENITH_OAUTH_{provider.upper()}_CLIENT_ID" in str(started.json())
    settings.ZENITH_OAUTH_MICROSOFT_CLIENT_ID = "ms-client"
    settings.ZENITH_OAUTH_MICROSOFT_TENANT = "contoso.onmicrosoft.com"
    mailbox = Mailbox.objects.get(oauth_provider="microsoft")
    url = api.post(f"/api/v1/integrations/mailboxes/{mailbox.pk}/oauth/start").json()[
        "authorize_url"
    ]
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.netloc == "login.microsoftonline.com"
    assert parts.path == "/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    assert query["scope"] == ["https://outlook.office.com/IMAP.AccessAsUser.All offline_access"]
    assert query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == ["ms-client"]
