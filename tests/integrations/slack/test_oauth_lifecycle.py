"""An installed workspace's life: events and history sync with the installed token, then
Slack's uninstall events (delivered signed to the live endpoint) stop its ingestion."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from alerts.models import AlertRule, AlertRuleKind
from alerts.services import alert_condition_check
from integrations.models import SlackEvent, SlackWorkspace
from integrations.selectors import integrations_in_error_list
from integrations.slack.services import slack_sync_organization
from tests.integrations.slack.conftest import (
    CHANNEL_ID,
    SIGNING_SECRET,
    event_payload,
    install_over_http,
    message_event,
    wait_until,
)
from tests.support.slack_server import DEFAULT_USER_ID, OAuthTeam, SlackOAuthServer
from tickets.models import Organization, Role, Ticket

TEAM = OAuthTeam(team_id="T0HOOLI", team="Hooli IT", bot_user_id="UBOTHOOLI", bot_id="BHOOLI")
SLACK_METHODS = ("auth.test", "conversations.history", "conversations.replies", "users.info")


@pytest.fixture
def slack_api(slack_oauth_api: SlackOAuthServer) -> SlackOAuthServer:
    slack_oauth_api.approve(TEAM)
    slack_oauth_api.add_channel(CHANNEL_ID)
    slack_oauth_api.add_user(DEFAULT_USER_ID, real_name="Dana Scully", email="dana@acme.test")
    return slack_oauth_api


def _event(slack_api: SlackOAuthServer, text: str) -> dict[str, Any]:
    message = slack_api.add_message(CHANNEL_ID, text)
    return event_payload(message_event(text, ts=message["ts"]), team_id=TEAM.team_id)


def test_installed_workspace_ingests_until_slack_uninstalls_it(
    make_user: Any,
    organization: Organization,
    oauth_settings: Any,
    slack_api: SlackOAuthServer,
    post_event: Any,
    inthread_worker: Any,
) -> None:
    admin = Client()
    admin.force_login(make_user(organization=organization, role=Role.ADMIN, username="ada"))
    assert install_over_http(admin, organization).status_code == 200
    workspace = SlackWorkspace.objects.get(team_id=TEAM.team_id)
    installed_token = workspace.bot_token
    watched = admin.post(
        "/api/v1/integrations/slack/channels/",
        {"workspace": workspace.pk, "channel_id": CHANNEL_ID, "name": "help"},
        content_type="application/json",
    )
    assert watched.status_code == 201, watched.content
    slack_api.reset_requests()

    # An event becomes a ticket (its requester looked up with the installed token).
    assert post_event(_event(slack_api, "Printer on fire")).status == 200
    ticket = wait_until(lambda: Ticket.objects.first(), what="the event's ticket")
    assert ticket.subject == "Printer on fire"
    assert ticket.requester == "Dana Scully <dana@acme.test>"

    # The history sync catches up on what no event brought, and repeats nothing.
    slack_api.add_message(CHANNEL_ID, "VPN is down")
    slack_api.add_message(CHANNEL_ID, "Laptop is slow")
    report = slack_sync_organization(organization=organization)
    assert report.errors == []
    assert sorted(Ticket.objects.values_list("subject", flat=True)) == [
        "Laptop is slow",
        "Printer on fire",
        "VPN is down",
    ]
    used = {r.token for r in slack_api.requests if r.method in SLACK_METHODS}
    assert used == {installed_token}

    # Slack uninstalls the app: it revokes the token and delivers both events.
    slack_api.events_url, slack_api.signing_secret = post_event.url, SIGNING_SECRET
    slack_api.uninstall(TEAM.team_id)

    workspace = wait_until(
        lambda: SlackWorkspace.objects.filter(pk=workspace.pk, enabled=False).first(),
        what="the workspace disabled by the uninstall",
    )
    assert "uninstalled" in workspace.disabled_reason or "revoked" in workspace.disabled_reason
    assert workspace.last_error
    assert workspace.last_error_at is not None
    shown = admin.get(f"/api/v1/integrations/slack/workspaces/{workspace.pk}/").json()
    assert shown["enabled"] is False
    assert "reinstall" in shown["disabled_reason"]
    in_error = integrations_in_error_list(organization=organization, since=timezone.now())
    assert [item["id"] for item in in_error] == [workspace.pk]
    rule = AlertRule.objects.create(
        organization=organization,
        name="integrations down",
        kind=AlertRuleKind.INTEGRATION_ERROR,
        integration="slack",
        window_minutes=15,
    )
    later = timezone.now() + timedelta(minutes=20)
    assert alert_condition_check(rule=rule, now=later).firing

    # Nothing more is ingested: events are ignored and the sync skips the workspace.
    late = _event(slack_api, "Anyone there?")
    assert post_event(late).status == 200
    ignored = wait_until(
        lambda: SlackEvent.objects.filter(event_id=late["event_id"]).first(),
        what="the late event recorded",
    )
    assert (ignored.status, ignored.note) == ("ignored", "workspace disabled")
    slack_api.reset_requests()
    assert slack_sync_organization(organization=organization).workspaces == 0
    assert slack_api.call_count() == 0
    assert Ticket.objects.count() == 3

    # Installing again brings it back with a new token, and ingestion resumes.
    assert install_over_http(admin, organization).status_code == 200
    workspace.refresh_from_db()
    assert workspace.enabled
    assert workspace.disabled_reason == ""
    assert workspace.bot_token != installed_token
    assert integrations_in_error_list(organization=organization, since=timezone.now()) == []
    slack_sync_organization(organization=organization)
    assert Ticket.objects.filter(subject="Anyone there?").count() == 1
