"""Alert messages to a Slack channel, through the organization's Slack workspace."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alerts.channels import AlertSendError
from integrations.crypto import DecryptionError
from integrations.models import SlackWorkspace
from integrations.slack.client import (
    SlackClientError,
    SlackTransientError,
    post_message,
)
from integrations.slack.services import slack_client_for

if TYPE_CHECKING:
    from alerts.models import AlertDelivery

TIMEOUT_SECONDS = 10


def send(*, delivery: AlertDelivery) -> None:
    """Post the message with the rule's workspace (or the organization's first enabled one)."""
    rule = delivery.incident.rule
    workspaces = SlackWorkspace.objects.filter(organization_id=rule.organization_id, enabled=True)
    if rule.slack_workspace_id is not None:
        workspaces = workspaces.filter(pk=rule.slack_workspace_id)
    try:
        workspace = workspaces.order_by("pk").first()
    except DecryptionError as exc:
        raise AlertSendError(f"the Slack bot token: {exc}", transient=False) from exc
    if workspace is None or not workspace.bot_token:
        raise AlertSendError(
            "the organization has no enabled Slack workspace with a bot token", transient=False
        )
    # A rotating token is renewed here too, like the syncs do.
    client = slack_client_for(
        workspace=workspace,
        max_rate_limit_retries=1,
        max_connection_retries=1,
        timeout=TIMEOUT_SECONDS,
    )
    try:
        post_message(client=client, channel=delivery.target, text=delivery.text)
    except SlackTransientError as exc:
        raise AlertSendError(str(exc), transient=True) from exc
    except SlackClientError as exc:  # invalid_auth, channel_not_found, not_in_channel...
        raise AlertSendError(str(exc), transient=False) from exc
