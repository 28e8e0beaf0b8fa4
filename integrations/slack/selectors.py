"""Slack reads: configuration and ledgers scoped to what a user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from integrations.models import SlackChannel, SlackMessage, SlackWorkspace
from tickets.models import Organization, Role
from tickets.selectors import organization_list_for_user


def slack_workspace_list_for_user(
    *, user: Any, min_role: Role = Role.ADMIN
) -> QuerySet[SlackWorkspace]:
    """Workspaces of organizations where the user holds ``min_role``."""
    return SlackWorkspace.objects.filter(
        organization__in=organization_list_for_user(user=user, min_role=min_role)
    ).select_related("organization")


def slack_channel_list_for_user(
    *, user: Any, min_role: Role = Role.ADMIN
) -> QuerySet[SlackChannel]:
    """Watched channels of organizations where the user holds ``min_role``."""
    return SlackChannel.objects.filter(
        workspace__organization__in=organization_list_for_user(user=user, min_role=min_role)
    ).select_related("workspace__organization")


def slack_workspace_list(*, organization: Organization) -> QuerySet[SlackWorkspace]:
    """An organization's Slack workspaces."""
    return SlackWorkspace.objects.filter(organization=organization)


def slack_organizations_to_sync() -> QuerySet[Organization]:
    """Organizations with at least one enabled workspace that watches an enabled channel."""
    return Organization.objects.filter(
        slack_workspaces__enabled=True, slack_workspaces__channels__enabled=True
    ).distinct()


def slack_message_get(
    *, organization: Organization, team_id: str, channel_id: str, ts: str
) -> SlackMessage | None:
    """The ledger row of one Slack message, if it was ingested for the organization."""
    return SlackMessage.objects.filter(
        organization=organization, team_id=team_id, channel_id=channel_id, ts=ts
    ).first()
