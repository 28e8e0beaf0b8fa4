""" "Add to Slack": slack-bolt's OAuth v2 flow over Django-backed stores.

``OrganizationOAuthFlow`` is Bolt's ``OAuthFlow`` with two changes: the state it issues
is bound to the organization and user who started the install (a row of
``SlackOAuthState``: single use, 10 minutes), and the installation it stores goes to
that organization. The code exchange, the ``auth.test`` of the new token and the
callback's checks (denied consent, browser cookie, state, code) are Bolt's own.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from slack_bolt.error import BoltError
from slack_bolt.oauth import OAuthFlow
from slack_bolt.oauth.callback_options import CallbackOptions, FailureArgs, SuccessArgs
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_bolt.request import BoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.oauth.installation_store import Bot, Installation, InstallationStore
from slack_sdk.oauth.state_store import OAuthStateStore

from integrations.models import SlackOAuthState, SlackWorkspace
from integrations.oauth_state import error_code, state_is_well_formed, state_new
from integrations.slack.services.install import (
    TeamClaimedError,
    oauth_web_client,
    slack_workspace_install,
)
from tickets.models import Organization

logger = logging.getLogger(__name__)

STATE_EXPIRATION_SECONDS = 10 * 60
# Keys of BoltRequest.context set by the views.
ORGANIZATION = "zenith_organization"
USER = "zenith_user"
RETURN_TO = "zenith_return_to"
INSTALLED = "zenith_installed"


class InstallStorageError(BoltError):
    """The installation could not be stored; ``reason`` is shown to the installer."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------
# --- Stores ---
# ------------------------------------------------------------------------------


class DjangoOAuthStateStore(OAuthStateStore):
    """States in ``SlackOAuthState``: bound to organization and user, single use, expiring."""

    def __init__(self, *, expiration_seconds: int = STATE_EXPIRATION_SECONDS) -> None:
        self.expiration_seconds = expiration_seconds

    @property
    def logger(self) -> logging.Logger:
        return logger

    def issue(
        self,
        *args: Any,
        organization: Organization | None = None,
        user: Any = None,
        return_to: str = "",
        **kwargs: Any,
    ) -> str:
        if organization is None or user is None:
            raise BoltError("an install state needs its organization and user")
        state = state_new()
        SlackOAuthState.objects.create(
            state=state, organization=organization, user=user, return_to=return_to[:255]
        )
        return state

    def _live(self) -> Any:
        cutoff = timezone.now() - timedelta(seconds=self.expiration_seconds)
        return SlackOAuthState.objects.filter(consumed_at__isnull=True, created_at__gte=cutoff)

    def find(self, state: str) -> SlackOAuthState | None:
        """The unconsumed, unexpired state row, without consuming it."""
        if not state_is_well_formed(state):
            return None
        return self._live().select_related("organization", "user").filter(state=state).first()

    def consume(self, state: str) -> bool:
        # One UPDATE: of two callbacks racing with one state, exactly one wins.
        if not state_is_well_formed(state):
            return False
        with transaction.atomic():
            return bool(self._live().filter(state=state).update(consumed_at=timezone.now()))


class DjangoInstallationStore(InstallationStore):
    """Installations as ``SlackWorkspace`` rows (the bot only; Zenith asks no user scopes).

    ``save`` needs the organization in the installation's custom values
    (``organization_id``), which ``OrganizationOAuthFlow`` sets from the state.
    """

    def __init__(self, *, client_id: str = "") -> None:
        self.client_id = client_id

    @property
    def logger(self) -> logging.Logger:
        return logger

    def save(self, installation: Installation) -> None:
        organization = installation.get_custom_value("organization")
        if not isinstance(organization, Organization):
            raise InstallStorageError("storage_error", "the install names no organization")
        try:
            slack_workspace_install(
                organization=organization,
                installation=installation,
                user=installation.get_custom_value("user"),
            )
        except TeamClaimedError as exc:
            raise InstallStorageError("team_claimed", str(exc)) from exc
        except ValueError as exc:
            raise InstallStorageError("storage_error", str(exc)) from exc

    def save_bot(self, bot: Bot) -> None:
        # Bots are saved with their installation (save); rotation saves through the service.
        return None

    def find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        # Only the workspace whose token was proven for this team (see slack_workspace_for_team).
        workspace = SlackWorkspace.objects.filter(
            verified_team_id=team_id or "-", team_id=team_id or "-", enabled=True
        ).first()
        if workspace is None or not workspace.bot_token:
            return None
        expires_at = workspace.bot_token_expires_at
        return Bot(
            app_id=workspace.app_id or None,
            enterprise_id=enterprise_id,
            team_id=workspace.team_id,
            team_name=workspace.name,
            bot_token=workspace.bot_token,
            bot_id=workspace.bot_id,
            bot_user_id=workspace.bot_user_id,
            bot_scopes=workspace.scopes,
            bot_refresh_token=workspace.bot_refresh_token or None,
            bot_token_expires_at=int(expires_at.timestamp()) if expires_at else None,
            installed_at=(workspace.installed_at or workspace.created_at).timestamp(),
        )

    def find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        bot = self.find_bot(enterprise_id=enterprise_id, team_id=team_id)
        if bot is None:
            return None
        return Installation(
            app_id=bot.app_id,
            enterprise_id=enterprise_id,
            team_id=bot.team_id,
            team_name=bot.team_name,
            bot_token=bot.bot_token,
            bot_id=bot.bot_id,
            bot_user_id=bot.bot_user_id,
            bot_scopes=bot.bot_scopes,
            bot_refresh_token=bot.bot_refresh_token,
            bot_token_expires_at=bot.bot_token_expires_at,
            user_id=user_id or "",
            installed_at=bot.installed_at,
        )


# ------------------------------------------------------------------------------
# --- Flow ---
# ------------------------------------------------------------------------------

_FAILURES = {
    "access_denied": (
        400,
        "The install was cancelled in Slack (consent was not given). Nothing was connected.",
    ),
    "invalid_browser": (
        400,
        "This install link was opened in another browser than the one that started it. "
        "Start again from Zenith.",
    ),
    "invalid_state": (
        400,
        "This install link is unknown, was already used or has expired (10 minutes). "
        "Start again from Zenith.",
    ),
    "state_of_another_user": (
        403,
        "This install was started by someone else. Start your own install from Zenith.",
    ),
    "missing_code": (400, "Slack sent no authorization code. Start again from Zenith."),
    "invalid_code": (
        400,
        "Slack refused the authorization code (used or expired). Start again from Zenith.",
    ),
    "team_claimed": (
        409,
        "This Slack workspace is already connected to another organization in Zenith. "
        "It can belong to one organization only.",
    ),
    "storage_error": (500, "The workspace could not be saved. Try again."),
}


def _wants_json(request: BoltRequest) -> bool:
    accept = ",".join(request.headers.get("accept") or [])
    return "application/json" in accept and "text/html" not in accept


def _page(*, status: int, title: str, message: str, request: BoltRequest) -> BoltResponse:
    if _wants_json(request):
        return BoltResponse(
            status=status,
            body=json.dumps({"detail": message}),
            headers={"Content-Type": "application/json"},
        )
    body = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} - Zenith</title></head><body>"
        f"<h1>{html.escape(title)}</h1><p id='message'>{html.escape(message)}</p>"
        "</body></html>"
    )
    return BoltResponse(
        status=status, body=body, headers={"Content-Type": "text/html; charset=utf-8"}
    )


def _on_success(args: SuccessArgs) -> BoltResponse:
    installation, request = args.installation, args.request
    return_to = request.context.get(RETURN_TO) or ""
    request.context[INSTALLED] = installation.team_name or installation.team_id
    if return_to:
        return BoltResponse(status=302, body="", headers={"Location": return_to})
    team = installation.team_name or installation.team_id or "the workspace"
    organization = request.context.get(ORGANIZATION)
    message = f"{team} ({installation.team_id}) is connected to {organization}."
    if _wants_json(request):
        body = {"detail": message, "team_id": installation.team_id, "team": team}
        return BoltResponse(
            status=200, body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
    return _page(status=200, title="Slack connected", message=message, request=request)


def _on_failure(args: FailureArgs) -> BoltResponse:
    reason = error_code(args.reason)
    if isinstance(args.error, InstallStorageError):
        reason = args.error.reason
    status, message = _FAILURES.get(reason, (400, f"The install failed ({reason})."))
    logger.warning("slack install failed: %s", reason)
    return _page(status=status, title="Slack not connected", message=message, request=args.request)


class OrganizationOAuthFlow(OAuthFlow):
    """Bolt's OAuth flow, with the state bound to organization and user."""

    def issue_new_state(self, request: BoltRequest) -> str:
        return self.state_store.issue(
            organization=request.context[ORGANIZATION],
            user=request.context[USER],
            return_to=request.context.get(RETURN_TO) or "",
        )

    def handle_callback(self, request: BoltRequest) -> BoltResponse:
        state = (request.query.get("state") or [""])[0]
        row = self.state_store.find(state) if "error" not in request.query else None
        if row is not None:
            if row.user_id != getattr(request.context.get(USER), "pk", None):
                return self.failure_handler(
                    FailureArgs(
                        request=request,
                        reason="state_of_another_user",
                        suggested_status_code=403,
                        settings=self.settings,
                        default=self.default_callback_options,
                    )
                )
            request.context[ORGANIZATION] = row.organization
            request.context[RETURN_TO] = row.return_to
        return super().handle_callback(request)

    def store_installation(self, request: BoltRequest, installation: Installation) -> None:
        installation.set_custom_value("organization", request.context.get(ORGANIZATION))
        installation.set_custom_value("user", request.context.get(USER))
        self.settings.installation_store.save(installation)

    @property
    def state_store(self) -> DjangoOAuthStateStore:  # type: ignore[override]
        return self.settings.state_store  # type: ignore[return-value]


def oauth_configured() -> bool:
    return bool(settings.SLACK_CLIENT_ID and settings.SLACK_CLIENT_SECRET)


def oauth_flow() -> OrganizationOAuthFlow:
    """The flow configured from settings (built per request: tests change settings)."""
    redirect_uri = settings.SLACK_OAUTH_REDIRECT_URI or None
    return OrganizationOAuthFlow(
        client=oauth_web_client(),
        logger=logger,
        settings=OAuthSettings(
            client_id=settings.SLACK_CLIENT_ID,
            client_secret=settings.SLACK_CLIENT_SECRET,
            scopes=list(settings.SLACK_SCOPES),
            user_scopes=[],
            redirect_uri=redirect_uri,
            authorization_url=settings.SLACK_OAUTH_BASE_URL,
            install_page_rendering_enabled=False,
            installation_store=DjangoInstallationStore(client_id=settings.SLACK_CLIENT_ID),
            installation_store_bot_only=True,
            state_store=DjangoOAuthStateStore(),
            state_expiration_seconds=STATE_EXPIRATION_SECONDS,
            callback_options=CallbackOptions(success=_on_success, failure=_on_failure),
        ),
    )
