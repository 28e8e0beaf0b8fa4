"""GET/POST/PATCH integrations/mailboxes/ (admins) and POST tasks/sync/email (operators)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from integrations.email.services import mailbox_poll
from integrations.models import Mailbox
from tests.integrations.email.conftest import MakeMailbox, append_all
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tickets.models import Organization, Role

pytestmark = [pytest.mark.django_db]

URL = "/api/v1/integrations/mailboxes"


@pytest.fixture
def admin_api(
    organization: Organization,
    make_user: Callable[..., Any],
    make_api_client: Callable[[Any], APIClient],
) -> APIClient:
    return make_api_client(make_user(organization=organization, role=Role.ADMIN, username="ada"))


def payload(org: Organization, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "organization": org.pk,
        "name": "Support",
        "host": "imap.example.com",
        "port": 993,
        "security": "ssl",
        "username": "support@example.com",
        "password": "s3cret-pw",
        "folder": "INBOX",
        "processed_folder": "Zenith/Done",
        "enabled": True,
    }
    values.update(overrides)
    return values


@pytest.mark.parametrize("slash", ["", "/"])
def test_admin_creates_and_lists_a_mailbox(
    admin_api: APIClient, organization: Organization, slash: str
) -> None:
    created = admin_api.post(URL + slash, payload(organization), format="json")

    assert created.status_code == 201, created.content
    body = created.json()
    for name in ("name", "host", "port", "security", "username", "folder", "processed_folder"):
        assert body[name] == payload(organization)[name]
    assert (body["organization"], body["enabled"], body["has_password"]) == (
        organization.pk,
        True,
        True,
    )
    assert (body["uidvalidity"], body["last_uid"], body["last_error"]) == (None, 0, "")
    assert "password" not in body
    assert Mailbox.objects.get(pk=body["id"]).password == "s3cret-pw"

    listed = admin_api.get(URL + slash)
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["results"]] == [body["id"]]
    detail = admin_api.get(f"{URL}/{body['id']}{slash}")
    assert detail.status_code == 200
    assert detail.json()["name"] == "Support"


def test_defaults_for_port_security_and_folder(
    admin_api: APIClient, organization: Organization
) -> None:
    response = admin_api.post(
        URL,
        {
            "organization": organization.pk,
            "name": "Minimal",
            "host": "imap.example.com",
            "username": "u",
            "password": "p",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["port"], body["security"], body["folder"], body["processed_folder"]) == (
        993,
        "ssl",
        "INBOX",
        "",
    )


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"security": "tls1.0"}, "security"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"host": ""}, "host"),
        ({"password": ""}, "password"),
        ({"processed_folder": "INBOX"}, "processed_folder"),
        ({"organization": None}, "organization"),
    ],
)
def test_bad_input_is_400_naming_the_field(
    admin_api: APIClient, organization: Organization, overrides: dict[str, Any], field: str
) -> None:
    response = admin_api.post(URL, payload(organization, **overrides), format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert Mailbox.objects.count() == 0


def test_mailbox_names_are_unique_per_organization(
    admin_api: APIClient, organization: Organization
) -> None:
    assert admin_api.post(URL, payload(organization), format="json").status_code == 201
    again = admin_api.post(URL, payload(organization), format="json")
    assert again.status_code == 400
    assert "name" in again.json()


def test_patch_changes_settings_and_replaces_the_password(
    admin_api: APIClient, organization: Organization
) -> None:
    mailbox_id = admin_api.post(URL, payload(organization), format="json").json()["id"]
    Mailbox.objects.filter(pk=mailbox_id).update(uidvalidity=7, last_uid=40)

    response = admin_api.patch(
        f"{URL}/{mailbox_id}/",
        {"folder": "Support", "password": "new-pw", "enabled": False},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["folder"], body["enabled"]) == ("Support", False)
    # Another folder is other mail: the cursor starts over there.
    assert (body["uidvalidity"], body["last_uid"]) == (None, 0)
    assert Mailbox.objects.get(pk=mailbox_id).password == "new-pw"
    # Leaving the password out keeps it.
    assert (
        admin_api.patch(f"{URL}/{mailbox_id}", {"name": "Help"}, format="json").status_code == 200
    )
    assert Mailbox.objects.get(pk=mailbox_id).password == "new-pw"


@pytest.mark.dovecot
def test_patch_refuses_another_folder_once_mail_was_ingested(
    admin_api: APIClient, make_mailbox: MakeMailbox, imap_account: ImapAccount
) -> None:
    mailbox = make_mailbox(imap_account)
    append_all(imap_account, [samples.plain()])
    mailbox_poll(mailbox=mailbox)

    response = admin_api.patch(f"{URL}/{mailbox.pk}", {"folder": "Archive"}, format="json")

    assert response.status_code == 400
    assert "add another mailbox" in response.json()["folder"][0]
    mailbox.refresh_from_db()
    assert mailbox.folder == "INBOX"


def test_patch_refuses_to_move_a_mailbox_to_another_organization(
    admin_api: APIClient, organization: Organization, other_organization: Organization
) -> None:
    mailbox_id = admin_api.post(URL, payload(organization), format="json").json()["id"]

    response = admin_api.patch(
        f"{URL}/{mailbox_id}", {"organization": other_organization.pk}, format="json"
    )

    assert response.status_code == 400
    assert "organization" in response.json()


def test_only_organization_admins_configure_mailboxes(
    organization: Organization,
    other_organization: Organization,
    make_user: Callable[..., Any],
    make_api_client: Callable[[Any], APIClient],
    admin_api: APIClient,
) -> None:
    mailbox_id = admin_api.post(URL, payload(organization), format="json").json()["id"]
    operator = make_api_client(make_user(organization=organization, role=Role.OPERATOR))
    outsider = make_api_client(make_user(organization=other_organization, role=Role.ADMIN))
    anonymous = APIClient()

    assert operator.post(URL, payload(organization, name="X"), format="json").status_code == 403
    assert operator.get(URL).json()["results"] == []
    assert operator.get(f"{URL}/{mailbox_id}").status_code == 404
    assert operator.patch(f"{URL}/{mailbox_id}", {"name": "X"}, format="json").status_code == 404
    assert outsider.get(f"{URL}/{mailbox_id}").status_code == 404
    refused = outsider.post(URL, payload(organization, name="X"), format="json")
    assert refused.status_code == 400
    assert "organization" in refused.json()
    assert anonymous.get(URL).status_code in (401, 403)
    assert Mailbox.objects.count() == 1


def test_connection_test_is_a_task_on_the_sync_queue(
    admin_api: APIClient,
    make_mailbox: MakeMailbox,
    imap_account: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from zenith.celery import app

    # Publishing is the broker's business; the run itself: test_mailbox_security.py.
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)))
    mailbox = make_mailbox(imap_account)

    with django_capture_on_commit_callbacks(execute=True):
        answer = admin_api.post(f"{URL}/{mailbox.pk}/test-connection")

    assert answer.status_code == 202
    assert sent[0][0] == "integrations.tasks.test_mailbox_connection"
    assert sent[0][1]["task_id"] == answer.json()["task_id"]
    assert sent[0][1]["kwargs"] == {
        "mailbox_id": mailbox.pk,
        "organization_id": mailbox.organization_id,
    }
    assert app.amqp.router.route({}, sent[0][0])["queue"].name == "sync_tasks"


@pytest.mark.parametrize("slash", ["", "/"])
def test_email_sync_trigger(
    organization: Organization,
    other_organization: Organization,
    make_user: Callable[..., Any],
    make_api_client: Callable[[Any], APIClient],
    slash: str,
    django_capture_on_commit_callbacks: Any,
) -> None:
    url = "/api/v1/tasks/sync/email" + slash
    operator = make_api_client(make_user(organization=organization, role=Role.OPERATOR))
    viewer = make_api_client(make_user(organization=organization, role=Role.VIEWER))

    with django_capture_on_commit_callbacks() as published:
        accepted = operator.post(url, {"organization_id": organization.pk}, format="json")

    assert accepted.status_code == 202, accepted.content
    assert len(accepted.json()["task_id"]) == 36
    assert len(published) == 1  # sent to the broker once the request's work is committed
    assert viewer.post(url, {"organization_id": organization.pk}, format="json").status_code == 403
    assert (
        operator.post(url, {"organization_id": other_organization.pk}, format="json").status_code
        == 404
    )
    missing = operator.post(url, {}, format="json")
    assert missing.status_code == 400
    assert "organization_id" in missing.json()
