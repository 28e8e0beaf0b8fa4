"""Rotating bot tokens (refresh_token + expires_in): renewed through slack_sdk's
TokenRotator before they expire, when Slack calls them expired mid-sync, and never with
one refresh token spent twice."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from integrations.models import SlackChannel, SlackMessage, SlackWorkspace
from integrations.slack.client import SlackAuthError
from integrations.slack.services import slack_sync_organization
from integrations.slack.services.install import slack_workspace_token_refresh
from tests.integrations.factories import SlackChannelFactory
from tests.integrations.slack.conftest import (
    CHANNEL_ID,
    event_payload,
    install_over_http,
    message_event,
    wait_until,
)
from tests.support.slack_server import DEFAULT_USER_ID, OAuthTeam, SlackOAuthServer
from tickets.models import Organization, Role, Ticket

TEAM = OAuthTeam(
    team_id="T0ROTATE", team="Rotating Co", bot_user_id="UBOTROT", bot_id="BROT", rotation=True
)


@pytest.fixture
def slack_api(slack_oauth_api: SlackOAuthServer) -> SlackOAuthServer:
    slack_oauth_api.approve(TEAM)
    slack_oauth_api.add_channel(CHANNEL_ID)
    slack_oauth_api.add_user(DEFAULT_USER_ID, real_name="Dana Scully", email="dana@acme.test")
    return slack_oauth_api


@pytest.fixture
def installed(
    make_user: Any, organization: Organization, oauth_settings: Any, slack_api: SlackOAuthServer
) -> SlackWorkspace:
    """The rotating team installed over HTTP, watching one channel."""
    admin = Client()
    admin.force_login(make_user(organization=organization, role=Role.ADMIN, username="ada"))
    assert install_over_http(admin, organization).status_code == 200
    workspace = SlackWorkspace.objects.get(team_id=TEAM.team_id)
    SlackChannelFactory(workspace=workspace, channel_id=CHANNEL_ID, name="help")
    slack_api.reset_requests()
    return workspace


def _history_tokens(slack_api: SlackOAuthServer) -> list[str | None]:
    return [r.token for r in slack_api.requests if r.method == "conversations.history"]


def test_the_install_keeps_the_refresh_token_encrypted_and_the_expiry(
    installed: SlackWorkspace,
) -> None:
    assert installed.bot_refresh_token.startswith("xoxe-1-")
    expires_in = (installed.bot_token_expires_at - timezone.now()).total_seconds()
    assert 43000 < expires_in <= 43200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bot_refresh_token FROM integrations_slackworkspace WHERE id = %s",
            [installed.pk],
        )
        assert "xoxe" not in cursor.fetchone()[0]


def test_a_token_expiring_between_pages_is_rotated_and_the_sync_finishes(
    installed: SlackWorkspace, organization: Organization, slack_api: SlackOAuthServer
) -> None:
    texts = [f"Request number {n}" for n in range(120)]
    for text in texts:
        slack_api.add_message(CHANNEL_ID, text)
    first_token = installed.bot_token
    # The token dies after the first history page (page size 50: three pages).
    slack_api.expire_after("conversations.history", 1)

    report = slack_sync_organization(organization=organization)

    assert report.errors == []
    assert sorted(Ticket.objects.values_list("subject", flat=True)) == sorted(texts)
    assert SlackMessage.objects.count() == 120
    assert slack_api.refresh_count() == 1
    workspace = SlackWorkspace.objects.get(pk=installed.pk)
    assert workspace.bot_token != first_token
    assert workspace.bot_refresh_token != installed.bot_refresh_token
    assert workspace.token_refresh_claimed_at is None
    # Page 1 with the old token; the next call is refused (token_expired), renews it, and
    # pages 2 and 3 are read with the new one. Page 2 is asked for while page 1 is written,
    # so it may be that refused call: then it is asked for again, with the new token.
    assert _history_tokens(slack_api) in (
        [first_token, *[workspace.bot_token] * 2],
        [first_token, first_token, *[workspace.bot_token] * 2],
    )
    channel = SlackChannel.objects.get(channel_id=CHANNEL_ID)
    assert channel.sync_cursor == ""
    assert channel.last_error == ""

    # The next sync reads nothing twice.
    slack_sync_organization(organization=organization)
    assert Ticket.objects.count() == 120


def test_a_due_token_is_renewed_before_events_and_sync_use_it(
    installed: SlackWorkspace,
    organization: Organization,
    slack_api: SlackOAuthServer,
    post_event: Any,
    inthread_worker: Any,
) -> None:
    old_token = installed.bot_token
    # Within the refresh margin (10 minutes): due, though Slack would still accept it.
    SlackWorkspace.objects.filter(pk=installed.pk).update(
        bot_token_expires_at=timezone.now() + timedelta(minutes=2)
    )
    message = slack_api.add_message(CHANNEL_ID, "Keyboard missing keys")

    payload = event_payload(message_event(message["text"], ts=message["ts"]), team_id=TEAM.team_id)
    assert post_event(payload).status == 200
    wait_until(lambda: Ticket.objects.exists(), what="the event's ticket")

    assert slack_api.refresh_count() == 1
    renewed = SlackWorkspace.objects.get(pk=installed.pk)
    assert renewed.bot_token != old_token
    assert renewed.bot_token_expires_at > timezone.now() + timedelta(hours=11)
    used = {r.token for r in slack_api.requests if r.method == "users.info"}
    assert used == {renewed.bot_token}

    SlackWorkspace.objects.filter(pk=installed.pk).update(
        bot_token_expires_at=timezone.now() + timedelta(minutes=2)
    )
    slack_api.reset_requests()
    assert slack_sync_organization(organization=organization).errors == []
    latest = SlackWorkspace.objects.get(pk=installed.pk).bot_token
    assert slack_api.refresh_count() == 1
    assert {r.token for r in slack_api.requests if r.token} == {latest}
    assert Ticket.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_refreshes_spend_the_refresh_token_once(
    installed: SlackWorkspace, slack_api: SlackOAuthServer
) -> None:
    SlackWorkspace.objects.filter(pk=installed.pk).update(
        bot_token_expires_at=timezone.now() - timedelta(seconds=1)
    )
    results: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def refresh() -> None:
        try:
            workspace = SlackWorkspace.objects.get(pk=installed.pk)
            barrier.wait()
            results.append(slack_workspace_token_refresh(workspace=workspace))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=refresh) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    stored = SlackWorkspace.objects.get(pk=installed.pk)
    assert results == [stored.bot_token] * 4
    assert slack_api.refresh_count() == 1
    assert stored.token_refresh_claimed_at is None


def test_a_refused_refresh_token_is_shown_on_the_workspace(
    installed: SlackWorkspace, organization: Organization, slack_api: SlackOAuthServer
) -> None:
    slack_api.add_message(CHANNEL_ID, "Screen is black")
    slack_api.revoke_refresh_tokens()
    SlackWorkspace.objects.filter(pk=installed.pk).update(
        bot_token_expires_at=timezone.now() - timedelta(seconds=1)
    )

    report = slack_sync_organization(organization=organization)

    assert "invalid_refresh_token" in report.errors[0]["error"]
    assert not report.transient
    workspace = SlackWorkspace.objects.get(pk=installed.pk)
    assert "invalid_refresh_token" in workspace.last_error
    assert workspace.token_refresh_claimed_at is None
    assert not Ticket.objects.exists()
    with pytest.raises(SlackAuthError):
        slack_workspace_token_refresh(workspace=workspace)


def test_a_pasted_token_does_not_rotate_with_the_old_refresh_token(
    installed: SlackWorkspace,
    make_user: Any,
    organization: Organization,
    slack_api: SlackOAuthServer,
) -> None:
    # Known to Slack for the same team (the pasted-token path verifies it with auth.test).
    slack_api.add_workspace(token="xoxb-pasted-1", team_id=TEAM.team_id, team=TEAM.team)
    admin = Client()
    admin.force_login(make_user(organization=organization, role=Role.ADMIN, username="bea"))

    answer = admin.patch(
        f"/api/v1/integrations/slack/workspaces/{installed.pk}/",
        {"bot_token": "xoxb-pasted-1"},
        content_type="application/json",
    )

    assert answer.status_code == 200, answer.content
    assert answer.json()["token_rotates"] is False
    workspace = SlackWorkspace.objects.get(pk=installed.pk)
    assert workspace.bot_token == "xoxb-pasted-1"
    assert workspace.bot_refresh_token == ""
    assert workspace.bot_token_expires_at is None
