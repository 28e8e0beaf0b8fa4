"""Configuration of Slack workspaces and channels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from django.utils import timezone

from integrations.models import (
    SlackChannel,
    SlackWorkspace,
)
from tickets.models import Organization

logger = structlog.get_logger(__name__)


def slack_workspace_create(
    *,
    organization: Organization,
    team_id: str,
    bot_token: str,
    name: str = "",
    enabled: bool = True,
) -> SlackWorkspace:
    """Connect a workspace to an organization; the token is stored encrypted."""
    return SlackWorkspace.objects.create(
        organization=organization,
        team_id=team_id,
        name=name,
        bot_token=bot_token,
        enabled=enabled,
    )


def slack_workspace_update(*, workspace: SlackWorkspace, data: Mapping[str, Any]) -> SlackWorkspace:
    """Change name, enabled or the bot token; a new token clears the recorded auth error."""
    fields = []
    for name in ("name", "enabled", "bot_token"):
        if name in data:
            setattr(workspace, name, data[name])
            fields.append(name)
    if "bot_token" in data:
        # The old bot identity and error belong to the old token.
        workspace.bot_user_id = workspace.bot_id = workspace.last_error = ""
        workspace.last_error_at = None
        fields += ["bot_user_id", "bot_id", "last_error", "last_error_at"]
    if fields:
        workspace.save(update_fields=[*fields, "updated_at"])
    return workspace


def slack_channel_create(
    *, workspace: SlackWorkspace, channel_id: str, name: str = "", enabled: bool = True
) -> SlackChannel:
    """Watch a channel of the workspace."""
    return SlackChannel.objects.create(
        workspace=workspace, channel_id=channel_id, name=name, enabled=enabled
    )


def slack_channel_update(*, channel: SlackChannel, data: Mapping[str, Any]) -> SlackChannel:
    """Rename, enable or disable a watched channel (its sync position is kept)."""
    fields = [name for name in ("name", "enabled") if name in data]
    for name in fields:
        setattr(channel, name, data[name])
    if fields:
        channel.save(update_fields=[*fields, "updated_at"])
    return channel


def _workspace_record_error(*, workspace: SlackWorkspace, error: str) -> None:
    now = timezone.now()
    SlackWorkspace.objects.filter(pk=workspace.pk).update(
        last_error=error, last_error_at=now, updated_at=now
    )
    workspace.last_error, workspace.last_error_at = error, now


def _channel_record_error(*, channel: SlackChannel, error: str) -> None:
    now = timezone.now()
    SlackChannel.objects.filter(pk=channel.pk).update(
        last_error=error, last_error_at=now, updated_at=now
    )
    channel.last_error, channel.last_error_at = error, now
