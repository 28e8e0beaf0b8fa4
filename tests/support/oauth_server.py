"""A real OAuth2 authorization server on 127.0.0.1 for mailbox consent tests.

It speaks what Microsoft's and Google's identity platforms speak to an IMAP client:
- ``GET /authorize``: authorization code with PKCE (S256); the test says who consents,
  and the browser is redirected back with ``code`` and ``state``;
- ``POST /token``: ``authorization_code`` (checks client, redirect URI and the PKCE
  verifier) and ``refresh_token`` (optionally rotating the refresh token);
- ``POST /introspect``: RFC 7662, as Dovecot's ``oauth2`` passdb asks it;
- controls for tests: expire every access token, revoke a user's grant.

Tokens are random strings kept in memory; nothing here is a stub of Zenith's code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

CLIENT_ID = "zenith-test-client"
CLIENT_SECRET = "zenith-test-secret"


@dataclass
class _Grant:
    user: str
    scope: str
    refresh_token: str
    revoked: bool = False


@dataclass
class _Code:
    user: str
    redirect_uri: str
    challenge: str
    scope: str
    expires: float


@dataclass
class _Access:
    user: str
    expires: float


@dataclass
class OAuthServerState:
    consenting_user: str | None = None
    rotate_refresh_tokens: bool = False
    access_ttl: int = 3600
    codes: dict[str, _Code] = field(default_factory=dict)
    grants: dict[str, _Grant] = field(default_factory=dict)  # by refresh token
    access: dict[str, _Access] = field(default_factory=dict)
    token_requests: list[str] = field(default_factory=list)  # grant types, in order
    introspections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class OAuthServer:
    """The server and its controls; ``url`` is its base, e.g. http://127.0.0.1:PORT."""

    def __init__(self) -> None:
        self.state = OAuthServerState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def authorize_url(self) -> str:
        return f"{self.url}/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        with self.state.lock:
            self.state.consenting_user = None
            self.state.rotate_refresh_tokens = False
            self.state.access_ttl = 3600
            self.state.codes.clear()
            self.state.grants.clear()
            self.state.access.clear()
            self.state.token_requests.clear()
            self.state.introspections = 0

    def consent_as(self, user: str) -> None:
        """The next /authorize is approved by this user."""
        self.state.consenting_user = user

    def expire_access_tokens(self) -> None:
        """Every access token issued so far stops being valid (as after its lifetime)."""
        with self.state.lock:
            for access in self.state.access.values():
                access.expires = 0

    def revoke(self, user: str) -> None:
        """The user withdrew consent (or changed the password): refresh fails invalid_grant."""
        with self.state.lock:
            for grant in self.state.grants.values():
                if grant.user == user:
                    grant.revoked = True
            for token, access in list(self.state.access.items()):
                if access.user == user:
                    del self.state.access[token]

    def live_refresh_tokens(self, user: str) -> list[str]:
        with self.state.lock:
            return [
                token
                for token, grant in self.state.grants.items()
                if grant.user == user and not grant.revoked
            ]


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _id_token(user: str) -> str:
    """An unsigned JWT naming the account (the client reads it from the token endpoint)."""

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'email': user, 'preferred_username': user})}."


class _Handler(BaseHTTPRequestHandler):
    state: OAuthServerState

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on outcomes, not on access logs."""

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        return {key: values[0] for key, values in parse_qs(raw).items()}

    def _client_ok(self, form: dict[str, str]) -> bool:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            decoded = base64.b64decode(auth[6:]).decode()
            client_id, _, secret = decoded.partition(":")
        return client_id == CLIENT_ID and secret == CLIENT_SECRET

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/authorize":
            self._json(404, {"error": "not_found"})
            return
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        user = self.state.consenting_user
        if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
            self._json(400, {"error": "invalid_request"})
            return
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            self._json(400, {"error": "invalid_request", "error_description": "PKCE required"})
            return
        redirect, state = query.get("redirect_uri", ""), query.get("state", "")
        if user is None:
            target = f"{redirect}?{urlencode({'error': 'access_denied', 'state': state})}"
        else:
            code = secrets.token_urlsafe(24)
            with self.state.lock:
                self.state.codes[code] = _Code(
                    user=user,
                    redirect_uri=redirect,
                    challenge=query["code_challenge"],
                    scope=query.get("scope", ""),
                    expires=time.time() + 300,
                )
            target = f"{redirect}?{urlencode({'code': code, 'state': state})}"
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        form = self._form()
        if path == "/introspect":
            self._introspect(form)
        elif path == "/token":
            self._token(form)
        else:
            self._json(404, {"error": "not_found"})

    def _introspect(self, form: dict[str, str]) -> None:
        with self.state.lock:
            self.state.introspections += 1
            access = self.state.access.get(form.get("token", ""))
            if access is None or access.expires < time.time():
                self._json(200, {"active": False})
                return
            self._json(200, {"active": True, "username": access.user})

    def _issue(self, *, user: str, scope: str, refresh_token: str) -> dict[str, Any]:
        access_token = secrets.token_urlsafe(32)
        self.state.access[access_token] = _Access(
            user=user, expires=time.time() + self.state.access_ttl
        )
        return {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": self.state.access_ttl,
            "refresh_token": refresh_token,
            "scope": scope,
            "id_token": _id_token(user),
        }

    def _token(self, form: dict[str, str]) -> None:
        if not self._client_ok(form):
            self._json(401, {"error": "invalid_client"})
            return
        grant_type = form.get("grant_type", "")
        with self.state.lock:
            self.state.token_requests.append(grant_type)
            if grant_type == "authorization_code":
                code = self.state.codes.pop(form.get("code", ""), None)
                if (
                    code is None
                    or code.expires < time.time()
                    or code.redirect_uri != form.get("redirect_uri")
                    or _s256(form.get("code_verifier", "")) != code.challenge
                ):
                    self._json(400, {"error": "invalid_grant"})
                    return
                refresh = secrets.token_urlsafe(32)
                self.state.grants[refresh] = _Grant(
                    user=code.user, scope=code.scope, refresh_token=refresh
                )
                self._json(
                    200, self._issue(user=code.user, scope=code.scope, refresh_token=refresh)
                )
            elif grant_type == "refresh_token":
                grant = self.state.grants.get(form.get("refresh_token", ""))
                if grant is None or grant.revoked:
                    self._json(
                        400, {"error": "invalid_grant", "error_description": "consent revoked"}
                    )
                    return
                refresh = grant.refresh_token
                if self.state.rotate_refresh_tokens:
                    # The old refresh token dies with this answer, as providers that rotate do.
                    grant.revoked = True
                    refresh = secrets.token_urlsafe(32)
                    self.state.grants[refresh] = _Grant(
                        user=grant.user, scope=grant.scope, refresh_token=refresh
                    )
                self._json(
                    200, self._issue(user=grant.user, scope=grant.scope, refresh_token=refresh)
                )
            else:
                self._json(400, {"error": "unsupported_grant_type"})


@pytest.fixture(scope="session")
def oauth_server_session() -> Iterator[OAuthServer]:
    server = OAuthServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def oauth_server(oauth_server_session: OAuthServer) -> OAuthServer:
    """The session's OAuth2 server, with every grant and token of earlier tests forgotten."""
    oauth_server_session.reset()
    return oauth_server_session
