"""Configuration of Slack workspaces and channels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.models import (
    SlackChannel,
    SlackWorkspace,
)
from integrations.slack.client import (
    SlackClientError,
    SlackIdentity,
    SlackTransientError,
    auth_identity,
    make_client,
)
from tickets.models import Organization

logger = structlog.get_logger(__name__)


class SlackTokenRejected(ValueError):
    """The bot token does not prove the workspace: Slack refused it or it is another team's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def slack_token_verify(*, team_id: str, bot_token: str) -> SlackIdentity:
    """Ask Slack (``auth.test``) who the token is; refuse unless it is a bot of ``team_id``.

    SlackTokenRejected for a dead token or another team's; SlackTransientError when Slack
    cannot be reached (nothing is proven either way).
    """
    client = make_client(token=bot_token, base_url=settings.SLACK_API_URL, timeout=10)
    try:
        identity = auth_identity(client=client)
    except SlackTransientError:
        raise
    except SlackClientError as exc:
        raise SlackTokenRejected(f"Slack refused the token ({exc.error})") from exc
    if identity.team_id != team_id:
        logger.warning("slack_token_team_mismatch", team_id=team_id, token_team_id=identity.team_id)
        raise SlackTokenRejected(
            f"the token belongs to another Slack workspace, not {team_id}; "
            "use a bot token installed in that workspace"
        )
    return identity


def _verified_fields(identity: SlackIdentity) -> dict[str, Any]:
    return {
        "verified_team_id": identity.team_id,
        "verified_at": timezone.now(),
        "bot_user_id": identity.user_id or "",
        "bot_id": identity.bot_id or "",
    }


def slack_workspace_create(
    *,
    organization: Organization,
    team_id: str,
    bot_token: str,
    name: str = "",
    enabled: bool = True,
) -> SlackWorkspace:
    """Connect a workspace whose bot token ``auth.test`` proves to be of ``team_id``.

    The token is stored encrypted. Raises SlackTokenRejected (nothing is written) when the
    token is dead or another team's, and IntegrityError when the team is connected already.
    """
    identity = slack_token_verify(team_id=team_id, bot_token=bot_token)
    return SlackWorkspace.objects.create(
        organization=organization,
        team_id=team_id,
        name=name,
        bot_token=bot_token,
        enabled=enabled,
        **_verified_fields(identity),
    )


def slack_workspace_update(*, workspace: SlackWorkspace, data: Mapping[str, Any]) -> SlackWorkspace:
    """Change name, enabled or the bot token; a new token must prove the workspace's team.

    A refused token (SlackTokenRejected) changes nothing; an accepted one clears the
    recorded error and records the verification.
    """
    identity = None
    if "bot_token" in data:
        identity = slack_token_verify(team_id=workspace.team_id, bot_token=data["bot_token"])
    fields = []
    for name in ("name", "enabled", "bot_token"):
        if name in data:
            setattr(workspace, name, data[name])
            fields.append(name)
    if data.get("enabled") and workspace.disabled_reason:
        # Re-enabled by an admin: Slack's reason for disabling it no longer stands.
        workspace.disabled_reason, workspace.disabled_at = "", None
        fields += ["disabled_reason", "disabled_at"]
    if identity is not None:
        # The old bot identity and error belong to the old token.
        for name, value in _verified_fields(identity).items():
            setattr(workspace, name, value)
            fields.append(name)
        workspace.last_error, workspace.last_error_at = "", None
        # A pasted token does not rotate: the old install's refresh token is not its own.
        workspace.bot_refresh_token, workspace.bot_token_expires_at = "", None
        fields += ["last_error", "last_error_at", "bot_refresh_token", "bot_token_expires_at"]
    if fields:
        workspace.save(update_fields=[*fields, "updated_at"])
    return workspace


def slack_workspace_record_verified(*, workspace: SlackWorkspace, identity: SlackIdentity) -> bool:
    """Record that the stored token proved the team (a sync's ``auth.test``).

    False when another organization's workspace holds the verification of that team.
    """
    if workspace.verified_team_id == identity.team_id:
        return True
    changes = _verified_fields(identity)
    try:
        with transaction.atomic():
            SlackWorkspace.objects.filter(pk=workspace.pk).update(**changes)
    except IntegrityError:
        return False
    for name, value in changes.items():
        setattr(workspace, name, value)
    return True


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
