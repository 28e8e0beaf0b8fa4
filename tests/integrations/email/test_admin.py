"""Admin: mailbox form with a write-only password, its actions, and the read-only ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from integrations.email.services import mailbox_poll
from integrations.models import InboundEmail, Mailbox
from tests.integrations.email.conftest import MakeMailbox, append_all
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tickets.models import Organization

pytestmark = [pytest.mark.django_db]

CHANGELIST = "/admin/integrations/mailbox/"
LEDGER = "/admin/integrations/inboundemail/"


@pytest.fixture
def admin_client(client: Client, make_user: Callable[..., Any]) -> Client:
    client.force_login(make_user(username="root", is_staff=True, is_superuser=True))
    return client


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_admin_form_stores_the_password_and_keeps_it_when_left_empty(
    admin_client: Client, organization: Organization
) -> None:
    form = {
        "organization": organization.pk,
        "name": "Support",
        "host": "imap.example.com",
        "port": 993,
        "security": "ssl",
        "username": "support@example.com",
        "new_password": "typed-once",
        "folder": "INBOX",
        "processed_folder": "",
        "enabled": "on",
    }
    response = admin_client.post(CHANGELIST + "add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    mailbox = Mailbox.objects.get()
    assert mailbox.password == "typed-once"

    page = admin_client.get(f"{CHANGELIST}{mailbox.pk}/change/")
    assert page.status_code == 200
    assert "typed-once" not in page.content.decode()
    response = admin_client.post(
        f"{CHANGELIST}{mailbox.pk}/change/", {**form, "new_password": "", "name": "Renamed"}
    )
    assert response.status_code == 302
    mailbox.refresh_from_db()
    assert (mailbox.name, mailbox.password) == ("Renamed", "typed-once")

    missing = admin_client.post(CHANGELIST + "add/", {**form, "name": "Other", "new_password": ""})
    assert missing.status_code == 200
    assert "needs its password" in missing.content.decode()


@pytest.mark.dovecot
def test_test_connection_and_sync_now_actions(
    admin_client: Client,
    make_mailbox: MakeMailbox,
    imap_account: ImapAccount,
    django_capture_on_commit_callbacks: Any,
) -> None:
    good = make_mailbox(imap_account, name="Good")
    bad = make_mailbox(imap_account, name="Bad", password="wrong")
    selected = {"_selected_action": [good.pk, bad.pk]}

    with django_capture_on_commit_callbacks() as tests_published:
        tested = admin_client.post(
            CHANGELIST, {"action": "test_connection", **selected}, follow=True
        )

    shown = messages_of(tested)
    # In a task on the sync queue, never in the web process.
    assert any(m.startswith("Connection test of Good enqueued (task ") for m in shown), shown
    assert any(m.startswith("Connection test of Bad enqueued (task ") for m in shown), shown
    assert len(tests_published) == 2

    with django_capture_on_commit_callbacks() as published:
        synced = admin_client.post(
            CHANGELIST, {"action": "sync_now", "_selected_action": [good.pk]}, follow=True
        )
    assert any(m.startswith("Poll of Good enqueued (task ") for m in messages_of(synced))
    assert len(published) == 1


@pytest.mark.dovecot
def test_ledger_is_browsable_filterable_searchable_and_read_only(
    admin_client: Client, make_mailbox: MakeMailbox, imap_account: ImapAccount
) -> None:
    mailbox = make_mailbox(imap_account)
    append_all(
        imap_account,
        [
            samples.plain("Needle subject", message_id="<needle@example.com>"),
            samples.plain("Haystack subject"),
            samples.auto_reply(subject="Away until Monday"),
        ],
    )
    mailbox_poll(mailbox=mailbox)
    row = InboundEmail.objects.get(message_id="<needle@example.com>")

    everything = admin_client.get(LEDGER).content.decode()
    assert all(s in everything for s in ("Needle subject", "Haystack subject", "Away until"))
    auto_only = admin_client.get(LEDGER, {"state__exact": "auto_reply"}).content.decode()
    assert "Away until Monday" in auto_only
    assert "Needle subject" not in auto_only
    by_mailbox = admin_client.get(LEDGER, {"mailbox__id__exact": mailbox.pk})
    assert by_mailbox.status_code == 200
    assert "Needle subject" in by_mailbox.content.decode()
    found = admin_client.get(LEDGER, {"q": "needle@example.com"}).content.decode()
    assert "Needle subject" in found
    assert "Haystack subject" not in found
    by_subject = admin_client.get(LEDGER, {"q": "Haystack"}).content.decode()
    assert "Haystack subject" in by_subject
    assert "Needle subject" not in by_subject
    year = row.received_at.year
    assert admin_client.get(LEDGER, {"received_at__year": year}).status_code == 200

    assert admin_client.get(LEDGER + "add/").status_code == 403
    # A mailbox that ingested mail keeps its folder: the form shows it read-only.
    change = admin_client.get(f"{CHANGELIST}{mailbox.pk}/change/").content.decode()
    assert 'name="folder"' not in change
    assert 'name="processed_folder"' in change
    view = admin_client.get(f"{LEDGER}{row.pk}/change/")
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    assert admin_client.post(f"{LEDGER}{row.pk}/change/", {"state": "rejected"}).status_code == 403
    row.refresh_from_db()
    assert row.state == "ticket"
