"""Requesters of synced messages: users.info once per user per day, kept across failures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import SlackChannel, SlackUserProfile
from integrations.slack.services import slack_sync_organization
from tests.integrations.slack.conftest import CHANNEL_ID
from tests.support import slack_server
from tests.support.slack_server import DEFAULT_TEAM_ID, SlackApiServer
from tickets.models import Organization, Ticket

AUTHORS = ("U0000101", "U0000102", "U0000103")


def requesters(organization: Organization) -> dict[str, str]:
    return dict(Ticket.objects.filter(organization=organization).values_list("body", "requester"))


def looked_up(slack_api: SlackApiServer) -> list[str]:
    return [r.params["user"] for r in slack_api.requests if r.method == "users.info"]


def test_profiles_looked_up_before_a_failure_are_kept_for_the_retry(
    organization: Organization,
    channel: SlackChannel,
    slack_api: SlackApiServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for number, author in enumerate(AUTHORS):
        slack_api.add_user(author, real_name=f"Person {number}", email=f"p{number}@acme.test")
        slack_api.add_message(CHANNEL_ID, f"help {number}", user=author)
    users_info = slack_server._METHODS["users.info"]

    def second_author_fails(api: SlackApiServer, workspace: Any, params: dict[str, Any]) -> Any:
        if params.get("user") == AUTHORS[1]:
            raise slack_server._ApiError("internal_error")
        return users_info(api, workspace, params)

    monkeypatch.setitem(slack_server._METHODS, "users.info", second_author_fails)

    report = slack_sync_organization(organization=organization)

    assert report.transient
    assert "users.info: internal_error" in report.errors[0]["error"]
    assert Ticket.objects.count() == 0
    assert list(SlackUserProfile.objects.values_list("user_id", flat=True)) == [AUTHORS[0]]

    monkeypatch.setitem(slack_server._METHODS, "users.info", users_info)
    slack_api.reset_requests()
    report = slack_sync_organization(organization=organization)

    assert not report.errors
    assert looked_up(slack_api) == list(AUTHORS[1:])
    assert requesters(organization) == {
        f"help {number}": f"Person {number} <p{number}@acme.test>" for number in range(3)
    }


def test_profiles_are_cached_for_a_day_and_a_vanished_user_keeps_the_known_name(
    organization: Organization, channel: SlackChannel, slack_api: SlackApiServer
) -> None:
    slack_api.add_user(AUTHORS[0], real_name="Dana Scully", email="dana@acme.test")
    stale = timezone.now() - timedelta(days=2)
    SlackUserProfile.objects.create(
        team_id=DEFAULT_TEAM_ID,
        user_id=AUTHORS[1],
        real_name="Fox Mulder",
        email="fox@acme.test",
        fetched_at=stale,
    )
    slack_api.add_message(CHANNEL_ID, "printer jam", user=AUTHORS[0])
    slack_api.add_message(CHANNEL_ID, "where is everyone", user=AUTHORS[1])

    slack_sync_organization(organization=organization)

    assert requesters(organization) == {
        "printer jam": "Dana Scully <dana@acme.test>",
        "where is everyone": "Fox Mulder <fox@acme.test>",
    }
    vanished = SlackUserProfile.objects.get(user_id=AUTHORS[1])
    assert (vanished.found, vanished.real_name) == (False, "Fox Mulder")
    assert vanished.fetched_at > stale
    assert sorted(looked_up(slack_api)) == sorted(AUTHORS[:2])

    slack_api.reset_requests()
    slack_api.add_message(CHANNEL_ID, "printer jam again", user=AUTHORS[0])
    slack_sync_organization(organization=organization)

    assert looked_up(slack_api) == []
    assert requesters(organization)["printer jam again"] == "Dana Scully <dana@acme.test>"
