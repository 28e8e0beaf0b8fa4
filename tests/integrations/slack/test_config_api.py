"""Slack configuration through the API: admins only, bot tokens write-only."""

from __future__ import annotations

import pytest

from integrations.models import SlackChannel, SlackWorkspace
from tests.integrations.factories import SlackWorkspaceFactory
from tickets.models import Role

WORKSPACES = "/api/v1/integrations/slack/workspaces"
CHANNELS = "/api/v1/integrations/slack/channels"
TOKEN = "xoxb-1111-2222-abcdefsecret"


@pytest.fixture(autouse=True)
def _tokens(slack_settings, slack_api):
    """The local Slack API server knows the tokens these tests connect with."""
    slack_api.add_workspace(token=TOKEN, team_id="T0000001")
    slack_api.add_workspace(token="xoxb-new-token-1", team_id="T0000001")


@pytest.fixture
def admin_client(make_user, make_api_client, organization):
    return make_api_client(make_user(organization=organization, role=Role.ADMIN, username="ada"))


@pytest.fixture
def acme_workspace(organization):
    return SlackWorkspaceFactory(
        organization=organization,
        team_id="T0000001",
        name="Acme",
        bot_token=TOKEN,
        verified_team_id="T0000001",
    )


def test_admin_creates_a_workspace_and_never_sees_the_token(admin_client, organization):
    answer = admin_client.post(
        f"{WORKSPACES}/",
        {
            "organization": organization.pk,
            "team_id": "T0000001",
            "name": "Acme",
            "bot_token": TOKEN,
        },
        format="json",
    )

    assert answer.status_code == 201, answer.content
    assert TOKEN not in answer.content.decode()
    assert "bot_token" not in answer.json()
    assert answer.json()["has_bot_token"] is True
    workspace = SlackWorkspace.objects.get()
    assert workspace.bot_token == TOKEN
    listed = admin_client.get(WORKSPACES)
    assert TOKEN not in listed.content.decode()
    assert [w["team_id"] for w in listed.json()["results"]] == ["T0000001"]


def test_patch_replaces_the_token_and_refuses_immutable_fields(admin_client, acme_workspace):
    acme_workspace.last_error = "invalid_auth"
    acme_workspace.save()

    answer = admin_client.patch(
        f"{WORKSPACES}/{acme_workspace.pk}", {"bot_token": "xoxb-new-token-1"}, format="json"
    )
    refused = admin_client.patch(
        f"{WORKSPACES}/{acme_workspace.pk}/", {"team_id": "T0000009"}, format="json"
    )

    assert answer.status_code == 200
    assert "xoxb-new-token-1" not in answer.content.decode()
    acme_workspace.refresh_from_db()
    assert acme_workspace.bot_token == "xoxb-new-token-1"
    assert acme_workspace.last_error == ""
    assert refused.status_code == 400
    assert "team_id" in refused.json()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"team_id": "T0000001", "bot_token": "not-a-token"}, "bot_token"),
        ({"team_id": "lower case", "bot_token": TOKEN}, "team_id"),
        ({"team_id": "T0000001"}, "bot_token"),
    ],
)
def test_bad_input_names_the_field(admin_client, organization, payload, field):
    answer = admin_client.post(
        WORKSPACES, {"organization": organization.pk, **payload}, format="json"
    )

    assert answer.status_code == 400
    assert field in answer.json()
    assert not SlackWorkspace.objects.exists()


def test_a_connected_team_cannot_be_connected_again(admin_client, organization, acme_workspace):
    answer = admin_client.post(
        WORKSPACES,
        {"organization": organization.pk, "team_id": "T0000001", "bot_token": TOKEN},
        format="json",
    )

    assert answer.status_code == 400
    assert "team_id" in answer.json()


def test_operators_are_refused_and_outsiders_see_nothing(
    make_user, make_api_client, organization, other_organization, acme_workspace
):
    operator = make_api_client(make_user(organization=organization, role=Role.OPERATOR))
    outsider = make_api_client(
        make_user(organization=other_organization, role=Role.ADMIN, username="eve")
    )
    body = {"organization": organization.pk, "team_id": "T0000002", "bot_token": TOKEN}

    assert operator.post(WORKSPACES, body, format="json").status_code == 403
    assert operator.get(WORKSPACES).json()["results"] == []
    assert outsider.get(f"{WORKSPACES}/{acme_workspace.pk}").status_code == 404
    assert (
        outsider.patch(
            f"{WORKSPACES}/{acme_workspace.pk}", {"enabled": False}, format="json"
        ).status_code
        == 404
    )
    assert outsider.post(WORKSPACES, body, format="json").status_code == 400
    assert SlackWorkspace.objects.count() == 1


def test_channels_are_configured_per_workspace(
    admin_client, acme_workspace, make_user, make_api_client, other_organization
):
    answer = admin_client.post(
        f"{CHANNELS}/",
        {"workspace": acme_workspace.pk, "channel_id": "C0000001", "name": "help"},
        format="json",
    )
    again = admin_client.post(
        CHANNELS, {"workspace": acme_workspace.pk, "channel_id": "C0000001"}, format="json"
    )
    channel = SlackChannel.objects.get()
    disabled = admin_client.patch(f"{CHANNELS}/{channel.pk}", {"enabled": False}, format="json")
    outsider = make_api_client(make_user(organization=other_organization, role=Role.ADMIN))

    assert answer.status_code == 201
    assert answer.json()["team_id"] == "T0000001"
    assert answer.json()["sync_in_progress"] is False
    assert again.status_code == 400
    assert "channel_id" in again.json()
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    assert outsider.get(CHANNELS).json()["results"] == []
    assert (
        outsider.post(
            CHANNELS, {"workspace": acme_workspace.pk, "channel_id": "C0000002"}, format="json"
        ).status_code
        == 400
    )


def test_sync_trigger_enqueues_for_operators(
    make_user,
    make_api_client,
    organization,
    other_organization,
    django_capture_on_commit_callbacks,
    monkeypatch,
):
    from zenith.celery import app

    # Publishing is the broker's business (tested in tests/zenith); here: what would be sent.
    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)))
    operator = make_api_client(make_user(organization=organization, role=Role.OPERATOR))
    viewer = make_api_client(make_user(organization=organization, role=Role.VIEWER))

    with django_capture_on_commit_callbacks(execute=True):
        answer = operator.post(
            "/api/v1/tasks/sync/slack", {"organization_id": organization.pk}, format="json"
        )

    assert answer.status_code == 202
    assert sent[0][0] == "integrations.tasks.sync_slack_tickets"
    assert sent[0][1]["kwargs"] == {"organization_id": organization.pk}
    assert sent[0][1]["task_id"] == answer.json()["task_id"]
    assert (
        viewer.post(
            "/api/v1/tasks/sync/slack/", {"organization_id": organization.pk}, format="json"
        ).status_code
        == 403
    )
    assert (
        operator.post(
            "/api/v1/tasks/sync/slack", {"organization_id": other_organization.pk}, format="json"
        ).status_code
        == 404
    )
    bad = operator.post("/api/v1/tasks/sync/slack", {}, format="json")
    assert bad.status_code == 400
    assert "organization_id" in bad.json()
    assert len(sent) == 1
