"""OAuth2 mailboxes: consent (start, callback), cached access tokens, refresh and revocation.

Calls to the provider happen outside any transaction; what they return is saved in one
short transaction (a rotated refresh token together with its access token). A refused
grant marks the mailbox ``needs_consent``: polls stop retrying it until an admin consents
again, and the integrations-in-error alert sees it through ``last_error_at``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from integrations.email import oauth
from integrations.models import Mailbox, MailboxAuthMethod, MailboxOAuthState, OAuthStatus
from integrations.oauth_state import state_is_well_formed, state_new

logger = structlog.get_logger(__name__)

# A consent link is good for this long, once.
STATE_TTL = timedelta(minutes=10)
# An access token this close to its expiry is refreshed before use.
REFRESH_MARGIN = timedelta(minutes=5)


class MailboxOAuthError(ValueError):
    """Consent cannot start or finish (no client configured, bad or used state...)."""


class MailboxNeedsConsent(Exception):
    """The provider refused the grant: an admin must consent again."""


def mailbox_oauth_provider(*, mailbox: Mailbox) -> oauth.OAuthProvider:
    """The provider a mailbox consents with; client credentials come from settings only."""
    name = mailbox.oauth_provider
    if name == "microsoft":
        client_id = settings.ZENITH_OAUTH_MICROSOFT_CLIENT_ID
        provider = oauth.microsoft_provider(
            tenant=settings.ZENITH_OAUTH_MICROSOFT_TENANT,
            client_id=client_id,
            client_secret=settings.ZENITH_OAUTH_MICROSOFT_CLIENT_SECRET,
        )
    elif name == "google":
        client_id = settings.ZENITH_OAUTH_GOOGLE_CLIENT_ID
        provider = oauth.google_provider(
            client_id=client_id, client_secret=settings.ZENITH_OAUTH_GOOGLE_CLIENT_SECRET
        )
    elif name == "generic":
        client_id = settings.ZENITH_OAUTH_GENERIC_CLIENT_ID
        provider = oauth.OAuthProvider(
            name="generic",
            authorize_url=mailbox.oauth_authorize_url,
            token_url=mailbox.oauth_token_url,
            scopes=tuple(mailbox.oauth_scopes.split()),
            client_id=client_id,
            client_secret=settings.ZENITH_OAUTH_GENERIC_CLIENT_SECRET,
        )
    else:
        raise MailboxOAuthError("oauth_provider is not set on this mailbox")
    if not client_id:
        variable = f"ZENITH_OAUTH_{name.upper()}_CLIENT_ID"
        raise MailboxOAuthError(f"{variable} is not configured on this server")
    return provider


def mailbox_oauth_start(*, mailbox: Mailbox, user: Any, redirect_uri: str) -> str:
    """Record a single-use state for this mailbox and admin; return the authorize URL."""
    if mailbox.auth_method != MailboxAuthMethod.OAUTH2:
        raise MailboxOAuthError("the mailbox does not use OAuth2 (auth_method is password)")
    provider = mailbox_oauth_provider(mailbox=mailbox)
    state = state_new()
    url, verifier = oauth.authorization_request(provider, redirect_uri=redirect_uri, state=state)
    MailboxOAuthState.objects.create(
        state=state, mailbox=mailbox, user=user, code_verifier=verifier, redirect_uri=redirect_uri
    )
    logger.info("mailbox_oauth_started", mailbox_id=mailbox.pk, provider=provider.name)
    return url


def _state_claim(*, state: str, user: Any) -> MailboxOAuthState:
    """Consume the state once; it must be fresh and started by this user."""
    if not state_is_well_formed(state):
        raise MailboxOAuthError("unknown consent state (it was started by someone else, or never)")
    row = (
        MailboxOAuthState.objects.select_related("mailbox", "mailbox__organization")
        .filter(state=state, user=user)
        .first()
    )
    if row is None:
        raise MailboxOAuthError("unknown consent state (it was started by someone else, or never)")
    if row.created_at < timezone.now() - STATE_TTL:
        raise MailboxOAuthError("this consent link expired; start again from the mailbox")
    claimed = MailboxOAuthState.objects.filter(pk=row.pk, consumed_at__isnull=True).update(
        consumed_at=timezone.now()
    )
    if not claimed:
        raise MailboxOAuthError("this consent link was already used; start again")
    return row


def mailbox_oauth_complete(*, state: str, code: str, user: Any) -> Mailbox:
    """Finish consent: exchange the code, store the refresh token encrypted."""
    row = _state_claim(state=state, user=user)
    mailbox = row.mailbox
    provider = mailbox_oauth_provider(mailbox=mailbox)
    try:
        tokens = oauth.code_exchange(
            provider,
            redirect_uri=row.redirect_uri,
            code=code,
            code_verifier=row.code_verifier,
            timeout=settings.ZENITH_OAUTH_TIMEOUT,
        )
    except oauth.OAuthError as exc:
        raise MailboxOAuthError(str(exc)) from exc
    mailbox.oauth_refresh_token = tokens.refresh_token
    mailbox.oauth_access_token = tokens.access_token
    mailbox.oauth_access_expires_at = tokens.expires_at
    mailbox.oauth_account = tokens.account
    mailbox.oauth_status = OAuthStatus.CONNECTED
    mailbox.oauth_status_reason = ""
    mailbox.last_error, mailbox.last_error_kind, mailbox.last_error_at = "", "", None
    mailbox.save(
        update_fields=[
            "oauth_refresh_token",
            "oauth_access_token",
            "oauth_access_expires_at",
            "oauth_account",
            "oauth_status",
            "oauth_status_reason",
            "last_error",
            "last_error_kind",
            "last_error_at",
            "updated_at",
        ]
    )
    logger.info("mailbox_oauth_connected", mailbox_id=mailbox.pk, provider=provider.name)
    return mailbox


def mailbox_needs_consent(*, mailbox: Mailbox, reason: str) -> None:
    """Stop using the grant: polls skip the mailbox until an admin consents again."""
    now = timezone.now()
    Mailbox.objects.filter(pk=mailbox.pk).update(
        oauth_status=OAuthStatus.NEEDS_CONSENT,
        oauth_status_reason=reason[:500],
        oauth_access_token="",
        oauth_access_expires_at=None,
        last_error=reason,
        last_error_kind="needs_consent",
        last_error_at=now,
        updated_at=now,
    )
    mailbox.oauth_status = OAuthStatus.NEEDS_CONSENT
    mailbox.oauth_status_reason = reason[:500]
    logger.warning("mailbox_needs_consent", mailbox_id=mailbox.pk, reason=reason)


def mailbox_access_token(*, mailbox: Mailbox, force_refresh: bool = False) -> str:
    """A valid access token: the cached one, or a refreshed one saved for the next poll."""
    if mailbox.oauth_status == OAuthStatus.NEEDS_CONSENT or not mailbox.oauth_refresh_token:
        raise MailboxNeedsConsent(
            mailbox.oauth_status_reason or "the mailbox has no OAuth2 consent yet"
        )
    expires = mailbox.oauth_access_expires_at
    if (
        not force_refresh
        and mailbox.oauth_access_token
        and expires is not None
        and expires - REFRESH_MARGIN > timezone.now()
    ):
        return mailbox.oauth_access_token
    provider = mailbox_oauth_provider(mailbox=mailbox)
    try:
        tokens = oauth.token_refresh(
            provider,
            refresh_token=mailbox.oauth_refresh_token,
            timeout=settings.ZENITH_OAUTH_TIMEOUT,
        )
    except oauth.OAuthGrantError as exc:
        mailbox_needs_consent(mailbox=mailbox, reason=str(exc))
        raise MailboxNeedsConsent(str(exc)) from exc
    rotated = tokens.refresh_token != mailbox.oauth_refresh_token
    with transaction.atomic():
        # The access token and a rotated refresh token land together or not at all.
        Mailbox.objects.filter(pk=mailbox.pk).update(
            oauth_access_token=tokens.access_token,
            oauth_refresh_token=tokens.refresh_token,
            oauth_access_expires_at=tokens.expires_at,
        )
    mailbox.oauth_access_token = tokens.access_token
    mailbox.oauth_refresh_token = tokens.refresh_token
    mailbox.oauth_access_expires_at = tokens.expires_at
    logger.info(
        "mailbox_oauth_refreshed",
        mailbox_id=mailbox.pk,
        rotated=rotated,
    )
    return tokens.access_token
