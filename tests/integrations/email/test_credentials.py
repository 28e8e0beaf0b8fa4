"""IMAP passwords are encrypted at rest, rotate with the keys, and never leave the server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.db import connection
from django.test import Client

from integrations.email import services as email_services
from integrations.email.services import mailbox_poll
from integrations.models import Mailbox
from tests.integrations.email.conftest import MakeMailbox, append_all
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tickets.models import Organization, Role

pytestmark = [pytest.mark.django_db]

PASSWORD = "correct horse battery staple"


def raw_password(mailbox: Mailbox) -> str:
    """The password column exactly as the database stores it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM integrations_mailbox WHERE id = %s", [mailbox.pk])
        return str(cursor.fetchone()[0])


def test_the_database_row_holds_no_plaintext_password(organization: Organization) -> None:
    mailbox = email_services.mailbox_create(
        organization=organization,
        name="Support",
        host="imap.example.com",
        username="support@example.com",
        password=PASSWORD,
    )

    stored = raw_password(mailbox)

    assert PASSWORD not in stored
    assert "horse" not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token
    assert Mailbox.objects.get(pk=mailbox.pk).password == PASSWORD


@pytest.mark.dovecot
def test_key_rotation(make_mailbox: MakeMailbox, imap_account: ImapAccount, settings: Any) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old_key]
    mailbox = make_mailbox(imap_account)
    token_before = raw_password(mailbox)
    append_all(imap_account, [samples.plain()])

    # The new key goes first; values written with the old one still decrypt.
    settings.FIELD_ENCRYPTION_KEYS = [new_key, old_key]
    assert mailbox_poll(mailbox=Mailbox.objects.get(pk=mailbox.pk)).ticket == 1
    assert email_services.mailbox_credentials_rotate() == 1
    token_after = raw_password(mailbox)
    assert token_after != token_before
    assert Fernet(new_key.encode()).decrypt(token_after.encode()).decode() == imap_account.password

    # Once rotated, the old key can go.
    settings.FIELD_ENCRYPTION_KEYS = [new_key]
    assert Mailbox.objects.get(pk=mailbox.pk).password == imap_account.password


@pytest.mark.dovecot
def test_a_password_no_key_can_decrypt_is_a_recorded_configuration_error(
    make_mailbox: MakeMailbox,
    imap_account: ImapAccount,
    settings: Any,
    make_user: Callable[..., Any],
    make_api_client: Callable[[Any], Any],
) -> None:
    mailbox = make_mailbox(imap_account)
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

    report = email_services.email_sync_organization_summary(organization=mailbox.organization)

    assert report["errors"][0]["kind"] == "config"
    assert "ZENITH_FIELD_KEYS" in report["errors"][0]["error"]
    # The admin still sees the mailbox and why it fails, and can type the password again.
    admin = make_user(organization=mailbox.organization, role=Role.ADMIN, username="ada")
    listed = make_api_client(admin).get("/api/v1/integrations/mailboxes/")
    assert listed.status_code == 200
    (item,) = listed.json()["results"]
    assert (item["last_error_kind"], item["has_password"]) == ("config", True)
    fixed = make_api_client(admin).patch(
        f"/api/v1/integrations/mailboxes/{mailbox.pk}/",
        {"password": imap_account.password},
        format="json",
    )
    assert fixed.status_code == 200, fixed.content
    assert mailbox_poll(mailbox=Mailbox.objects.get(pk=mailbox.pk)).error == ""


def test_the_password_is_never_returned_by_the_api_or_shown_in_the_admin(
    organization: Organization,
    make_user: Callable[..., Any],
    make_api_client: Callable[[Any], Any],
    client: Client,
) -> None:
    admin = make_user(organization=organization, role=Role.ADMIN, username="ada")
    api = make_api_client(admin)
    created = api.post(
        "/api/v1/integrations/mailboxes/",
        {
            "organization": organization.pk,
            "name": "Support",
            "host": "imap.example.com",
            "username": "support@example.com",
            "password": PASSWORD,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    mailbox_id = created.json()["id"]
    responses = [
        created,
        api.get("/api/v1/integrations/mailboxes"),
        api.get(f"/api/v1/integrations/mailboxes/{mailbox_id}/"),
        api.patch(f"/api/v1/integrations/mailboxes/{mailbox_id}", {"name": "Help"}, format="json"),
    ]
    for response in responses:
        assert response.status_code in (200, 201)
        assert PASSWORD not in response.content.decode()
        body = response.json()
        for item in body.get("results", [body]) if isinstance(body, dict) else body:
            assert "password" not in item
            assert item["has_password"] is True

    superuser = make_user(username="root", is_staff=True, is_superuser=True)
    client.force_login(superuser)
    for url in (
        f"/admin/integrations/mailbox/{mailbox_id}/change/",
        "/admin/integrations/mailbox/",
    ):
        page = client.get(url)
        assert page.status_code == 200
        assert PASSWORD not in page.content.decode()
