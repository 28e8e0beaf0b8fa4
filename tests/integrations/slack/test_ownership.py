"""A Slack workspace belongs to the organization whose bot token proved it (``auth.test``).

Two organizations on one server: acme owns team TAAAA1111, globex owns TBBBB2222 and
tries to claim acme's team. Events are signed and posted to the live endpoint, and a real
worker (in a thread) processes them.
"""

from __future__ import annotations

import socket
import time
from io import StringIO

import pytest
from django.core.management import call_command

from integrations.models import SlackChannel, SlackEvent, SlackWorkspace
from tests.integrations.slack.conftest import CHANNEL_ID, event_payload, message_event, wait_until
from tests.support.slack_server import DEFAULT_USER_ID, SlackApiServer
from tickets.models import Role, Ticket

WORKSPACES = "/api/v1/integrations/slack/workspaces"
CHANNELS = "/api/v1/integrations/slack/channels"
ACME_TEAM, ACME_TOKEN = "TAAAA1111", "xoxb-acme-real-token"
GLOBEX_TEAM, GLOBEX_TOKEN = "TBBBB2222", "xoxb-globex-own-token"


@pytest.fixture
def tokens(slack_settings, slack_api: SlackApiServer) -> SlackApiServer:
    slack_api.add_workspace(token=ACME_TOKEN, team_id=ACME_TEAM, bot_user_id="UBOTACME")
    slack_api.add_workspace(token=GLOBEX_TOKEN, team_id=GLOBEX_TEAM, bot_user_id="UBOTGLOBEX")
    slack_api.add_channel(CHANNEL_ID)
    slack_api.add_user(DEFAULT_USER_ID, real_name="Dana Scully", email="dana@acme.test")
    return slack_api


@pytest.fixture
def acme_admin(make_user, make_api_client, organization):
    return make_api_client(make_user(organization=organization, role=Role.ADMIN, username="ada"))


@pytest.fixture
def globex_admin(make_user, make_api_client, other_organization):
    return make_api_client(
        make_user(organization=other_organization, role=Role.ADMIN, username="mallory")
    )


def _connect(client, organization, team_id, token):
    return client.post(
        WORKSPACES,
        {"organization": organization.pk, "team_id": team_id, "name": "Slack", "bot_token": token},
        format="json",
    )


def _watch(client, workspace_id):
    answer = client.post(
        CHANNELS, {"workspace": workspace_id, "channel_id": CHANNEL_ID}, format="json"
    )
    assert answer.status_code == 201, answer.content


def _deliver(post_event, text, ts, team_id=ACME_TEAM) -> SlackEvent:
    payload = event_payload(message_event(text, ts=ts), team_id=team_id)
    assert post_event(payload).status == 200
    return wait_until(
        lambda: (
            SlackEvent.objects.filter(event_id=payload["event_id"])
            .exclude(status="pending")
            .first()
        ),
        what=f"event {text!r} handled",
    )


@pytest.mark.django_db
def test_a_token_of_another_team_or_a_dead_token_connects_nothing(
    tokens, globex_admin, other_organization
):
    foreign = _connect(globex_admin, other_organization, ACME_TEAM, GLOBEX_TOKEN)
    unknown = _connect(globex_admin, other_organization, ACME_TEAM, "xoxb-made-up-token")

    assert foreign.status_code == 400
    assert "another Slack workspace" in foreign.json()["bot_token"][0]
    assert unknown.status_code == 400
    assert "invalid_auth" in unknown.json()["bot_token"][0]
    assert not SlackWorkspace.objects.exists()
    # What was asked: auth.test with each token, nothing else.
    assert tokens.call_count("auth.test") == 2
    assert tokens.call_count() == 2


@pytest.mark.django_db(transaction=True)
def test_the_capture_from_the_issue_no_longer_works(
    tokens,
    acme_admin,
    globex_admin,
    organization,
    other_organization,
    post_event,
    inthread_worker,
):
    """Issue 14, hole 1: globex registers acme's team with any token, then gets its events."""
    squat = _connect(globex_admin, other_organization, ACME_TEAM, GLOBEX_TOKEN)
    own = _connect(acme_admin, organization, ACME_TEAM, ACME_TOKEN)

    assert squat.status_code == 400
    assert "bot_token" in squat.json()
    assert own.status_code == 201, own.content
    assert own.json()["verified"] is True
    assert own.json()["verified_team_id"] == ACME_TEAM
    assert own.json()["bot_user_id"] == "UBOTACME"
    _watch(acme_admin, own.json()["id"])

    event = _deliver(post_event, "acme's printer is on fire", "1700000001.000100")

    assert event.status == "processed"
    ticket = Ticket.objects.get()
    assert ticket.organization == organization
    assert ticket.subject == "acme's printer is on fire"
    assert not Ticket.objects.filter(organization=other_organization).exists()


@pytest.mark.django_db(transaction=True)
def test_an_unproven_workspace_gets_no_events_and_does_not_block_the_owner(
    tokens, acme_admin, organization, other_organization, post_event, inthread_worker
):
    # A row from before tokens were verified: globex typed acme's team with its own token.
    squatter = SlackWorkspace.objects.create(
        organization=other_organization, team_id=ACME_TEAM, bot_token=GLOBEX_TOKEN
    )
    SlackChannel.objects.create(workspace=squatter, channel_id=CHANNEL_ID)

    # Bolt's authorize finds no proven workspace: 200 for Slack, and nothing is recorded.
    early = event_payload(message_event("sent before acme connected", ts="1700000002.000100"))
    early["team_id"] = ACME_TEAM
    assert post_event(early).status == 200
    own = _connect(acme_admin, organization, ACME_TEAM, ACME_TOKEN)
    _watch(acme_admin, own.json()["id"])
    after = _deliver(post_event, "sent after acme connected", "1700000003.000100")
    out = StringIO()
    call_command("sync_slack", "--org", other_organization.slug, stdout=out, stderr=out)

    assert not Ticket.objects.filter(organization=other_organization).exists()
    assert not SlackEvent.objects.filter(event_id=early["event_id"]).exists()
    assert own.status_code == 201, own.content
    assert after.status == "processed"
    assert list(Ticket.objects.values_list("organization__slug", "subject")) == [
        ("acme", "sent after acme connected")
    ]
    squatter.refresh_from_db()
    # Its own sync does not prove it either: the token is another team's.
    assert squatter.verified is False
    assert f"belongs to team {GLOBEX_TEAM}, not {ACME_TEAM}" in squatter.last_error


@pytest.mark.django_db
def test_a_sync_proves_an_old_workspace_unless_another_organization_owns_the_team(
    tokens, organization, other_organization
):
    legacy = SlackWorkspace.objects.create(
        organization=organization, team_id=ACME_TEAM, bot_token=ACME_TOKEN
    )
    # Also a real token of acme's team, but acme's proof came first.
    tokens.add_workspace(token="xoxb-second-app", team_id=ACME_TEAM)
    late = SlackWorkspace.objects.create(
        organization=other_organization, team_id=ACME_TEAM, bot_token="xoxb-second-app"
    )

    call_command("sync_slack", "--org", organization.slug, stdout=StringIO())
    call_command("sync_slack", "--org", other_organization.slug, stdout=StringIO())

    legacy.refresh_from_db()
    late.refresh_from_db()
    assert (legacy.verified, legacy.verified_at is not None) == (True, True)
    assert late.verified is False
    assert late.last_error == f"team {ACME_TEAM} is connected to another organization"


@pytest.mark.django_db
def test_a_new_token_must_prove_the_same_team(tokens, acme_admin, organization):
    workspace_id = _connect(acme_admin, organization, ACME_TEAM, ACME_TOKEN).json()["id"]
    first = SlackWorkspace.objects.get()
    tokens.add_workspace(token="xoxb-acme-rotated", team_id=ACME_TEAM, bot_user_id="UBOTNEW")

    refused = acme_admin.patch(
        f"{WORKSPACES}/{workspace_id}", {"bot_token": GLOBEX_TOKEN}, format="json"
    )
    unchanged = SlackWorkspace.objects.get()
    time.sleep(0.01)
    rotated = acme_admin.patch(
        f"{WORKSPACES}/{workspace_id}", {"bot_token": "xoxb-acme-rotated"}, format="json"
    )

    assert refused.status_code == 400
    assert "bot_token" in refused.json()
    assert (unchanged.bot_token, unchanged.verified_at) == (ACME_TOKEN, first.verified_at)
    assert rotated.status_code == 200, rotated.content
    now = SlackWorkspace.objects.get()
    assert (now.bot_token, now.bot_user_id, now.verified) == ("xoxb-acme-rotated", "UBOTNEW", True)
    assert now.verified_at > first.verified_at


@pytest.mark.django_db
def test_a_proven_team_cannot_be_connected_by_a_second_organization(
    tokens, acme_admin, globex_admin, organization, other_organization
):
    assert _connect(acme_admin, organization, ACME_TEAM, ACME_TOKEN).status_code == 201
    tokens.add_workspace(token="xoxb-second-app", team_id=ACME_TEAM)

    again = _connect(globex_admin, other_organization, ACME_TEAM, "xoxb-second-app")

    assert again.status_code == 400
    assert "team_id" in again.json()
    assert SlackWorkspace.objects.get().organization == organization


@pytest.mark.django_db
def test_slack_unreachable_answers_503_and_connects_nothing(
    slack_settings, acme_admin, organization
):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    slack_settings.SLACK_API_URL = f"http://127.0.0.1:{port}/api/"

    answer = _connect(acme_admin, organization, ACME_TEAM, ACME_TOKEN)

    assert answer.status_code == 503
    assert "verify the bot token" in answer.json()["detail"]
    assert not SlackWorkspace.objects.exists()


@pytest.mark.django_db
def test_the_admin_refuses_another_teams_token(client, django_user_model, tokens, organization):
    root = django_user_model.objects.create_superuser("root", "root@acme.test", "pw")
    client.force_login(root)

    answer = client.post(
        "/admin/integrations/slackworkspace/add/",
        {
            "organization": organization.pk,
            "team_id": ACME_TEAM,
            "name": "Claimed",
            "new_bot_token": GLOBEX_TOKEN,
            "enabled": "on",
            "channels-TOTAL_FORMS": "0",
            "channels-INITIAL_FORMS": "0",
        },
    )

    assert answer.status_code == 200
    assert "belongs to another Slack workspace" in answer.content.decode()
    assert not SlackWorkspace.objects.exists()
