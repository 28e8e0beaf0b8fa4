"""Integrations in error, across both providers, as the alerts app reads them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.models import SlackWorkspace
from integrations.selectors import MAILBOX, SLACK, integrations_in_error_list
from tests.integrations.factories import MailboxFactory, SlackWorkspaceFactory


def test_mailboxes_and_workspaces_in_error_since_before_the_window(
    db, organization, other_organization
):
    now = timezone.now()
    hour_ago = now - timedelta(hours=1)
    MailboxFactory(
        organization=organization,
        name="Support",
        last_error="LOGIN failed",
        last_error_kind="auth",
        last_success_at=hour_ago,
    )
    MailboxFactory(organization=organization, name="Fine", last_success_at=hour_ago)
    MailboxFactory(  # in error, but only since its success five minutes ago
        organization=organization,
        name="Recent",
        last_error="timed out",
        last_success_at=now - timedelta(minutes=5),
    )
    MailboxFactory(organization=other_organization, name="Theirs", last_error="down")
    unnamed = SlackWorkspaceFactory(organization=organization, team_id="TNONAME", name="")
    # Never synced: in error since it was created.
    SlackWorkspace.objects.filter(pk=unnamed.pk).update(
        last_error="invalid_auth", created_at=hour_ago
    )
    SlackWorkspaceFactory(organization=organization, last_error="gone", enabled=False)

    since = now - timedelta(minutes=30)
    found = integrations_in_error_list(organization=organization, since=since)

    assert [(i["kind"], i["name"], i["error"], i["error_kind"]) for i in found] == [
        ("mailbox", "Support", "LOGIN failed", "auth"),
        ("slack_workspace", "TNONAME", "invalid_auth", ""),
    ]
    assert found[0]["since"] == hour_ago.isoformat()
    only_slack = integrations_in_error_list(
        organization=organization, since=since, providers=[SLACK]
    )
    assert [i["kind"] for i in only_slack] == ["slack_workspace"]
    only_mail = integrations_in_error_list(
        organization=organization, since=since, providers=[MAILBOX]
    )
    assert [i["name"] for i in only_mail] == ["Support"]


def test_an_unknown_provider_is_refused(db, organization):
    with pytest.raises(ValueError, match="pager"):
        integrations_in_error_list(
            organization=organization, since=timezone.now(), providers=["pager"]
        )
