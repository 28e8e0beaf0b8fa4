"""OAuth2 for IMAP mailboxes (XOAUTH2): providers, consent URLs, code exchange and refresh.

A thin wrapper over Authlib's OAuth2 client (authorization code with PKCE S256); it never
touches the ORM, so services decide what is stored. Errors come in two kinds:
``OAuthGrantError`` (consent revoked, password changed: a person must consent again) and
``OAuthTransientError`` (network, 5xx: try later).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client.errors import OAuthError as AuthlibOAuthError
from authlib.integrations.requests_client import OAuth2Session

from taskops.errors import TransientError

MICROSOFT_SCOPES = ("https://outlook.office.com/IMAP.AccessAsUser.All", "offline_access")
MICROSOFT_IMAP_HOST = "outlook.office365.com"
GOOGLE_SCOPES = ("https://mail.google.com/",)
GOOGLE_IMAP_HOST = "imap.gmail.com"
GOOGLE_AUTHORIZE_URL = "https://accounts.google.com/o/oauth2/v2/auth"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
PROVIDER_IMAP_HOSTS = {"microsoft": MICROSOFT_IMAP_HOST, "google": GOOGLE_IMAP_HOST}


class OAuthError(Exception):
    """Base class of every error raised here; the message is safe to show an admin."""


class OAuthGrantError(OAuthError):
    """The grant is gone (``invalid_grant``): the mailbox needs consent again."""


class OAuthTransientError(OAuthError, TransientError):
    """The provider could not be reached or failed; a later attempt may succeed."""


@dataclass(frozen=True)
class OAuthProvider:
    """Where and as whom Zenith asks for tokens."""

    name: str
    authorize_url: str
    token_url: str
    scopes: tuple[str, ...]
    client_id: str
    client_secret: str = field(repr=False)
    # Google wants access_type=offline to hand out a refresh token; others ignore extras.
    extra_authorize_params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TokenSet:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    account: str


def microsoft_provider(*, tenant: str, client_id: str, client_secret: str) -> OAuthProvider:
    base = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
    return OAuthProvider(
        name="microsoft",
        authorize_url=f"{base}/authorize",
        token_url=f"{base}/token",
        scopes=MICROSOFT_SCOPES,
        client_id=client_id,
        client_secret=client_secret,
    )


def google_provider(*, client_id: str, client_secret: str) -> OAuthProvider:
    return OAuthProvider(
        name="google",
        authorize_url=GOOGLE_AUTHORIZE_URL,
        token_url=GOOGLE_TOKEN_URL,
        scopes=GOOGLE_SCOPES,
        client_id=client_id,
        client_secret=client_secret,
        extra_authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    )


def _session(provider: OAuthProvider, *, redirect_uri: str | None = None) -> OAuth2Session:
    return OAuth2Session(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        scope=" ".join(provider.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",  # noqa: S106 - a method name
    )


def authorization_request(
    provider: OAuthProvider, *, redirect_uri: str, state: str
) -> tuple[str, str]:
    """The URL to send the admin to, and the PKCE verifier to keep until the callback."""
    verifier = generate_token(64)
    url, _ = _session(provider, redirect_uri=redirect_uri).create_authorization_url(
        provider.authorize_url,
        state=state,
        code_verifier=verifier,
        **dict(provider.extra_authorize_params),
    )
    return url, verifier


def _account(token: dict[str, Any]) -> str:
    """The account the grant belongs to, from the ID token the token endpoint returned.

    The token came straight from the provider over the connection we opened, so its
    signature is not what vouches for it (OpenID Connect Core 3.1.3.7).
    """
    id_token = str(token.get("id_token") or "")
    try:
        payload = id_token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ""
    return str(claims.get("email") or claims.get("preferred_username") or claims.get("upn") or "")


def _token_set(token: dict[str, Any], *, previous_refresh_token: str = "") -> TokenSet:
    if not token.get("access_token"):
        raise OAuthError("the provider's answer has no access_token")
    expires_in = int(token.get("expires_in") or 3600)
    return TokenSet(
        access_token=str(token["access_token"]),
        # A provider that does not rotate answers a refresh without a new refresh token.
        refresh_token=str(token.get("refresh_token") or previous_refresh_token),
        expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
        account=_account(token),
    )


def _call(action: str, fn: Any, /, **kwargs: Any) -> dict[str, Any]:
    try:
        token: dict[str, Any] = fn(**kwargs)
    except AuthlibOAuthError as exc:
        if exc.error == "invalid_grant":
            detail = f": {exc.description}" if exc.description else ""
            raise OAuthGrantError(f"{action}: the provider refused the grant{detail}") from exc
        raise OAuthError(f"{action}: {exc.error}") from exc
    except requests.Timeout as exc:
        raise OAuthTransientError(f"{action}: the provider timed out") from exc
    except requests.ConnectionError as exc:
        raise OAuthTransientError(f"{action}: cannot reach the provider") from exc
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status == 429:
            raise OAuthTransientError(f"{action}: the provider answered {status}") from exc
        raise OAuthError(f"{action}: the provider answered {status}") from exc
    except ValueError as exc:  # a body that is not JSON
        raise OAuthError(f"{action}: the provider's answer is not OAuth2") from exc
    return token


def code_exchange(
    provider: OAuthProvider, *, redirect_uri: str, code: str, code_verifier: str, timeout: float
) -> TokenSet:
    """Trade the authorization code (and the PKCE verifier) for tokens."""
    session = _session(provider, redirect_uri=redirect_uri)
    token = _call(
        "code exchange",
        session.fetch_token,
        url=provider.token_url,
        grant_type="authorization_code",
        code=code,
        code_verifier=code_verifier,
        timeout=timeout,
    )
    token_set = _token_set(token)
    if not token_set.refresh_token:
        raise OAuthError("the provider granted no refresh token (is offline access allowed?)")
    return token_set


def token_refresh(provider: OAuthProvider, *, refresh_token: str, timeout: float) -> TokenSet:
    """A fresh access token; the refresh token too when the provider rotates it."""
    session = _session(provider)
    token = _call(
        "token refresh",
        session.refresh_token,
        url=provider.token_url,
        refresh_token=refresh_token,
        timeout=timeout,
    )
    return _token_set(token, previous_refresh_token=refresh_token)
