""" "Add to Slack" installs, rotating bot tokens and uninstalls.

A workspace installed through OAuth takes its team, bot and scopes from Slack's answer
to ``oauth.v2.access``, never from the person installing it, so no organization can
claim a team it does not own. Rotating tokens are renewed through slack_sdk's
``TokenRotator``: one process at a time claims the refresh token in a short transaction,
calls Slack outside it, and saves the new pair.
"""

from __future__ import annotations

import http.client
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from slack_sdk import WebClient
from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.token_rotation import TokenRotator

from integrations.models import SlackWorkspace
from integrations.slack.client import SlackAuthError, SlackTransientError
from tickets.models import Organization

logger = structlog.get_logger(__name__)

# A claim on the refresh token older than this is taken over (its holder died).
REFRESH_CLAIM_SECONDS = 30
# How long a process waits for another one's refresh before giving up (transient).
REFRESH_WAIT_SECONDS = 20
# Refresh failures that no retry fixes: the grant is gone, the app must be reinstalled.
_DEAD_GRANT_ERRORS = frozenset(
    {
        "invalid_refresh_token",
        "invalid_grant",
        "token_revoked",
        "invalid_client_id",
        "bad_client_secret",
    }
)


class TeamClaimedError(Exception):
    """The team is already installed for another organization."""

    def __init__(self, team_id: str) -> None:
        super().__init__(f"Slack team {team_id} is already connected to another organization")
        self.team_id = team_id


def oauth_web_client() -> WebClient:
    """A token-less client for ``oauth.v2.access`` at ``settings.SLACK_API_URL``."""
    base_url = settings.SLACK_API_URL
    return WebClient(base_url=base_url if base_url.endswith("/") else base_url + "/")


def _expires_at(installation: Installation) -> datetime | None:
    expires_at = installation.bot_token_expires_at
    return datetime.fromtimestamp(int(expires_at), tz=UTC) if expires_at else None


def slack_workspace_install(
    *, organization: Organization, installation: Installation, user: Any = None
) -> SlackWorkspace:
    """Create or update the workspace of an OAuth install, from Slack's answer only.

    Raises ``TeamClaimedError`` when another organization holds the team. A reinstall
    re-enables a workspace that Slack had disabled (uninstall, revoked tokens).
    """
    team_id = installation.team_id or ""
    if not team_id or not installation.bot_token:
        raise ValueError("Slack's answer names no team or bot token")
    now = timezone.now()
    values = {
        "name": (installation.team_name or "")[:200],
        "bot_token": installation.bot_token,
        "bot_user_id": installation.bot_user_id or "",
        "bot_id": installation.bot_id or "",
        "bot_refresh_token": installation.bot_refresh_token or "",
        "bot_token_expires_at": _expires_at(installation),
        "token_refresh_claimed_at": None,
        "app_id": installation.app_id or "",
        "scopes": ",".join(installation.bot_scopes or []),
        "installed_via_oauth": True,
        "installed_at": now,
        "installed_by": user if getattr(user, "pk", None) else None,
        "enabled": True,
        "disabled_reason": "",
        "disabled_at": None,
        "last_error": "",
        "last_error_at": None,
        # Slack's own answer named the team: the install is the proof of ownership.
        "verified_team_id": team_id,
        "verified_at": now,
    }
    try:
        with transaction.atomic():
            owners = SlackWorkspace.objects.select_for_update().filter(verified_team_id=team_id)
            if owners.exclude(organization=organization).exists():
                raise TeamClaimedError(team_id)
            workspace = (
                SlackWorkspace.objects.select_for_update()
                .filter(organization=organization, team_id=team_id)
                .first()
            )
            if workspace is None:
                workspace = SlackWorkspace(organization=organization, team_id=team_id)
            for name, value in values.items():
                setattr(workspace, name, value)
            workspace.save()
    except IntegrityError as exc:
        # Another organization's install of the same team committed first.
        raise TeamClaimedError(team_id) from exc
    logger.info(
        "slack_workspace_installed",
        organization=organization.pk,
        team_id=team_id,
        rotating=workspace.bot_token_expires_at is not None,
    )
    return workspace


def slack_workspace_disable(*, workspace: SlackWorkspace, reason: str) -> SlackWorkspace:
    """Slack took the app away (uninstall, revoked tokens): stop ingesting, say why.

    The error stays on the workspace, so "integrations in error" alerts fire; a new
    install through OAuth clears it.
    """
    now = timezone.now()
    SlackWorkspace.objects.filter(pk=workspace.pk).update(
        enabled=False,
        disabled_reason=reason[:255],
        disabled_at=now,
        last_error=reason,
        last_error_at=now,
        token_refresh_claimed_at=None,
        updated_at=now,
    )
    workspace.enabled, workspace.disabled_reason, workspace.disabled_at = False, reason, now
    workspace.last_error, workspace.last_error_at = reason, now
    logger.warning(
        "slack_workspace_disabled",
        organization=workspace.organization_id,
        team_id=workspace.team_id,
        reason=reason,
    )
    return workspace


def _margin() -> timedelta:
    return timedelta(seconds=settings.SLACK_TOKEN_REFRESH_MARGIN_SECONDS)


def _needs_refresh(workspace: SlackWorkspace) -> bool:
    expires_at = workspace.bot_token_expires_at
    return expires_at is not None and expires_at <= timezone.now() + _margin()


def slack_workspace_token_refresh(*, workspace: SlackWorkspace, expired: str | None = None) -> str:
    """The workspace's bot token, renewed first when it expires within the margin.

    ``expired`` names a token Slack has refused as expired: it is renewed even if its
    recorded expiry is later. Concurrent callers never spend one refresh token twice:
    the first claims it, the others wait and read what it saved. Raises SlackAuthError
    when Slack refuses the refresh token, SlackTransientError when it cannot be reached.
    """
    deadline = time.monotonic() + REFRESH_WAIT_SECONDS
    while True:
        with transaction.atomic():
            row = SlackWorkspace.objects.select_for_update().get(pk=workspace.pk)
            renewed_elsewhere = expired is not None and row.bot_token != expired
            if renewed_elsewhere or (expired is None and not _needs_refresh(row)):
                _copy_tokens(row, workspace)
                return row.bot_token
            if not row.bot_refresh_token:
                raise SlackAuthError("token_expired", method="oauth.v2.access")
            now = timezone.now()
            claimed = row.token_refresh_claimed_at
            if claimed is None or claimed < now - timedelta(seconds=REFRESH_CLAIM_SECONDS):
                SlackWorkspace.objects.filter(pk=row.pk).update(token_refresh_claimed_at=now)
                break
        if time.monotonic() > deadline:
            raise SlackTransientError("token_refresh_busy", method="oauth.v2.access")
        time.sleep(0.2)
    # The claim is committed: Slack is called outside any transaction.
    try:
        renewed = _rotate(row=row, force=expired is not None)
    except SlackTokenRotationError as exc:
        SlackWorkspace.objects.filter(pk=row.pk, token_refresh_claimed_at=now).update(
            token_refresh_claimed_at=None
        )
        error = _rotation_error(exc)
        if error in _DEAD_GRANT_ERRORS:
            raise SlackAuthError(error, method="oauth.v2.access") from exc
        raise SlackTransientError(error, method="oauth.v2.access") from exc
    except (OSError, http.client.HTTPException) as exc:
        SlackWorkspace.objects.filter(pk=row.pk, token_refresh_claimed_at=now).update(
            token_refresh_claimed_at=None
        )
        raise SlackTransientError("network_error", method="oauth.v2.access") from exc
    except Exception:
        SlackWorkspace.objects.filter(pk=row.pk, token_refresh_claimed_at=now).update(
            token_refresh_claimed_at=None
        )
        raise
    row.bot_token = renewed.bot_token
    row.bot_refresh_token = renewed.bot_refresh_token or row.bot_refresh_token
    row.bot_token_expires_at = (
        datetime.fromtimestamp(int(renewed.bot_token_expires_at), tz=UTC)
        if renewed.bot_token_expires_at
        else None
    )
    saved = SlackWorkspace.objects.filter(pk=row.pk, token_refresh_claimed_at=now).update(
        bot_token=row.bot_token,
        bot_refresh_token=row.bot_refresh_token,
        bot_token_expires_at=row.bot_token_expires_at,
        token_refresh_claimed_at=None,
        updated_at=timezone.now(),
    )
    if not saved:
        # Our claim was taken over (we were slower than REFRESH_CLAIM_SECONDS): keep
        # the newest pair on record and use ours for this call only.
        logger.warning("slack_token_refresh_claim_lost", team_id=row.team_id)
    logger.info("slack_token_refreshed", team_id=row.team_id, expires_at=row.bot_token_expires_at)
    _copy_tokens(row, workspace)
    return row.bot_token


def _rotate(*, row: SlackWorkspace, force: bool) -> Bot:
    rotator = TokenRotator(
        client_id=settings.SLACK_CLIENT_ID,
        client_secret=settings.SLACK_CLIENT_SECRET,
        client=oauth_web_client(),
    )
    expires_at = row.bot_token_expires_at
    bot = Bot(
        app_id=row.app_id or None,
        team_id=row.team_id,
        bot_token=row.bot_token,
        bot_id=row.bot_id,
        bot_user_id=row.bot_user_id,
        bot_refresh_token=row.bot_refresh_token,
        # A token Slack refused is due now, whatever its recorded expiry says.
        bot_token_expires_at=int(time.time())
        if force or expires_at is None
        else int(expires_at.timestamp()),
        installed_at=time.time(),
    )
    renewed = rotator.perform_bot_token_rotation(
        bot=bot, minutes_before_expiration=max(1, settings.SLACK_TOKEN_REFRESH_MARGIN_SECONDS // 60)
    )
    if renewed is None:
        raise SlackAuthError("not_a_bot_token", method="oauth.v2.access")
    return renewed


def _rotation_error(exc: SlackTokenRotationError) -> str:
    api_error = getattr(exc, "api_error", None)
    response = getattr(api_error, "response", None)
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return "token_rotation_failed"


def _copy_tokens(source: SlackWorkspace, target: SlackWorkspace) -> None:
    target.bot_token = source.bot_token
    target.bot_refresh_token = source.bot_refresh_token
    target.bot_token_expires_at = source.bot_token_expires_at


class WorkspaceTokens:
    """A workspace's bot token for ``RotatingTokenClient``: reads the clock, not the DB,
    until the token is due; then renews it through ``slack_workspace_token_refresh``."""

    def __init__(self, workspace: SlackWorkspace) -> None:
        self.workspace = workspace

    def current(self) -> str:
        if _needs_refresh(self.workspace):
            return slack_workspace_token_refresh(workspace=self.workspace)
        return self.workspace.bot_token

    def renew(self, *, expired: str) -> str:
        return slack_workspace_token_refresh(workspace=self.workspace, expired=expired)
