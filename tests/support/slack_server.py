"""A real local HTTP server speaking a subset of the Slack Web API, plus its pytest fixture.

Register with ``pytest_plugins = ["tests.support.slack_server"]`` (or import ``slack_api``)
and point slack_sdk at it with ``WebClient(token=..., base_url=slack_api.url)``.

Implemented methods: ``auth.test``, ``conversations.history``, ``conversations.replies``,
``users.info`` and ``chat.postMessage``. Parameters are read from the query string, a
form-encoded body and a JSON body (slack_sdk uses form bodies for reads and JSON for
``chat.postMessage``); the token comes from ``Authorization: Bearer`` or a ``token`` param.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

DEFAULT_TOKEN = "xoxb-test-token"
DEFAULT_TEAM_ID = "T0000001"
DEFAULT_BOT_USER_ID = "UBOT0001"
DEFAULT_BOT_ID = "BBOT0001"
DEFAULT_USER_ID = "U0000001"

# Slack's documented ceiling for conversations.history / conversations.replies page size.
MAX_PAGE_SIZE = 999
DEFAULT_PAGE_SIZE = 100
_TS_START_MICROS = 1_700_000_000_000_000
_TS_STEP_MICROS = 100


def ts_to_micros(ts: str) -> int:
    """Convert a Slack ts ("1700000000.000100", "1700000000", "1.5") to integer microseconds."""
    return int(Decimal(ts) * 1_000_000)


def micros_to_ts(micros: int) -> str:
    """Format integer microseconds as a Slack ts string with six decimals."""
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _encode_cursor(prefix: str, micros: int) -> str:
    """Build an opaque cursor the way Slack does (base64 of ``next_ts:<micros>``)."""
    return base64.b64encode(f"{prefix}:{micros}".encode()).decode()


def _decode_cursor(prefix: str, cursor: str) -> int | None:
    """Decode a cursor built by ``_encode_cursor``; None when it is malformed."""
    try:
        raw = base64.b64decode(cursor.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    head, _, value = raw.partition(":")
    if head != prefix or not value.isdigit():
        return None
    return int(value)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server saw it."""

    time: float  # time.monotonic() when the request arrived
    method: str  # Slack method name, e.g. "conversations.history"
    params: dict[str, Any]
    token: str | None
    status: int
    rate_limited: bool
    retry_after: int | None = None  # the Retry-After seconds sent with a 429


@dataclass
class Workspace:
    """A token's workspace identity; ``revoked_error`` makes every call fail with that error."""

    token: str
    team_id: str
    team: str = "Zenith Test"
    bot_user_id: str = DEFAULT_BOT_USER_ID
    bot_id: str = DEFAULT_BOT_ID
    revoked_error: str | None = None


@dataclass
class _Channel:
    """Channel state: top-level messages ordered by ts and replies keyed by parent ts."""

    id: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # ts (as microseconds) -> message, for O(1) lookups of parents and replies alike.
    by_ts: dict[int, dict[str, Any]] = field(default_factory=dict)


class _ApiError(Exception):
    """Internal: makes a handler answer ``{"ok": false, "error": code}``."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class SlackApiServer:
    """In-memory Slack workspace served over real HTTP on 127.0.0.1."""

    def __init__(self, *, rate_limit_every: int | None = None, retry_after: int = 1) -> None:
        """Create a stopped server; ``rate_limit_every=N`` answers every Nth request with 429."""
        self.rate_limit_every = rate_limit_every
        self.retry_after = retry_after
        # None = rate limit every method; a set limits 429s to those Slack method names.
        self.rate_limit_methods: set[str] | None = None
        self.workspaces: dict[str, Workspace] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, _Channel] = {}
        self.posted: list[dict[str, Any]] = []
        self.requests: list[RecordedRequest] = []
        self._lock = threading.RLock()
        self._request_counter = 0
        self._last_ts_micros = _TS_START_MICROS
        self._mangled: dict[str, Any] = {}
        self._forced_failures: list[list[Any]] = []  # [method, status, calls to let pass]
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_workspace(token=DEFAULT_TOKEN, team_id=DEFAULT_TEAM_ID)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL for ``WebClient(base_url=...)``; ends with "/" as slack_sdk requires."""
        if self._httpd is None:
            raise RuntimeError("server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/api/"

    def start(self) -> SlackApiServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-api-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and release the port."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SlackApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ state setup

    def add_workspace(
        self,
        *,
        token: str,
        team_id: str,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        team: str = "Zenith Test",
    ) -> Workspace:
        """Register a token that authenticates as a bot in ``team_id``."""
        workspace = Workspace(
            token=token,
            team_id=team_id,
            team=team,
            bot_user_id=bot_user_id,
            bot_id=bot_id,
        )
        with self._lock:
            self.workspaces[token] = workspace
        return workspace

    def revoke(self, token: str, error: str = "invalid_auth") -> None:
        """Make every call with ``token`` fail with ``error`` (e.g. ``account_inactive``)."""
        with self._lock:
            if token not in self.workspaces:
                self.add_workspace(token=token, team_id=DEFAULT_TEAM_ID)
            self.workspaces[token].revoked_error = error

    def add_user(
        self,
        user_id: str,
        *,
        name: str | None = None,
        real_name: str | None = None,
        email: str | None = None,
        is_bot: bool = False,
    ) -> dict[str, Any]:
        """Add a user returned by ``users.info``."""
        name = name or user_id.lower()
        real_name = real_name if real_name is not None else name.title()
        profile: dict[str, Any] = {"real_name": real_name, "display_name": name}
        if email is not None:
            profile["email"] = email
        user = {
            "id": user_id,
            "name": name,
            "real_name": real_name,
            "deleted": False,
            "is_bot": is_bot,
            "profile": profile,
        }
        with self._lock:
            self.users[user_id] = user
        return copy.deepcopy(user)

    def add_channel(self, channel: str) -> None:
        """Create an empty channel so history calls do not answer ``channel_not_found``."""
        with self._lock:
            self.channels.setdefault(channel, _Channel(id=channel))

    def next_ts(self) -> str:
        """Allocate a ts strictly greater than any ts handed out or added so far."""
        with self._lock:
            self._last_ts_micros += _TS_STEP_MICROS
            return micros_to_ts(self._last_ts_micros)

    def mangle(self, ts: str, served: Any) -> None:
        """Serve `served` (anything JSON: a broken message) in history where message `ts` is."""
        with self._lock:
            self._mangled[ts] = served

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = DEFAULT_USER_ID,
        ts: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add a message (a reply when ``thread_ts`` names a parent) and return a copy of it."""
        with self._lock:
            chan = self.channels.setdefault(channel, _Channel(id=channel))
            if ts is None:
                ts = self.next_ts()
            else:
                ts = micros_to_ts(ts_to_micros(ts))
                # Keep auto-generated ts values increasing past explicit ones.
                self._last_ts_micros = max(self._last_ts_micros, ts_to_micros(ts))
            if self._find(chan, ts) is not None:
                raise ValueError(f"duplicate ts {ts} in {channel}")
            message: dict[str, Any] = {"type": "message", "text": text, "ts": ts}
            if user is not None:
                message["user"] = user
            message.update(extra)
            if thread_ts is None or thread_ts == ts:
                if thread_ts is not None:
                    message["thread_ts"] = ts
                self._insert_sorted(chan.messages, message)
                chan.by_ts[ts_to_micros(ts)] = message
                return copy.deepcopy(message)
            parent = self._find_parent(chan, thread_ts)
            if parent is None:
                raise ValueError(f"no parent {thread_ts} in {channel}")
            message["thread_ts"] = parent["ts"]
            if message.get("user") is not None:
                message.setdefault("parent_user_id", parent.get("user"))
            replies = chan.replies.setdefault(parent["ts"], [])
            self._insert_sorted(replies, message)
            chan.by_ts[ts_to_micros(ts)] = message
            # Mirror the thread summary fields Slack keeps on the parent.
            parent["thread_ts"] = parent["ts"]
            parent["reply_count"] = len(replies)
            parent["latest_reply"] = replies[-1]["ts"]
            reply_users = [r["user"] for r in replies if r.get("user")]
            parent["reply_users"] = list(dict.fromkeys(reply_users))
            parent["reply_users_count"] = len(parent["reply_users"])
            return copy.deepcopy(message)

    def add_thread(
        self,
        channel: str,
        text: str,
        *,
        replies: list[str],
        user: str = DEFAULT_USER_ID,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Add a parent message with one reply per text in ``replies``."""
        parent = self.add_message(channel, text, user=user)
        added = [
            self.add_message(channel, reply, user=user, thread_ts=parent["ts"]) for reply in replies
        ]
        return self.get_message(channel, parent["ts"]) or parent, added

    def get_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """Return a copy of a top-level message or reply by ts."""
        with self._lock:
            chan = self.channels.get(channel)
            found = self._find(chan, ts) if chan else None
            return copy.deepcopy(found) if found else None

    def fail_next(
        self, *, status: int = 500, count: int = 1, method: str | None = None, after: int = 0
    ) -> None:
        """Answer the next ``count`` requests (optionally of ``method``) with HTTP ``status``,
        once ``after`` such requests have been answered normally."""
        with self._lock:
            self._forced_failures.extend(
                [[method, status, after]] + [[method, status, 0]] * (count - 1)
            )

    # ------------------------------------------------------------------ observation

    def reset_requests(self) -> None:
        """Forget recorded requests and restart the rate-limit counter."""
        with self._lock:
            self.requests.clear()
            self._request_counter = 0

    def call_count(self, method: str | None = None) -> int:
        """Number of requests received, optionally only for one Slack method."""
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    @property
    def rate_limited_count(self) -> int:
        """Number of requests answered with 429."""
        with self._lock:
            return sum(1 for r in self.requests if r.rate_limited)

    def retry_after_violations(self) -> list[tuple[RecordedRequest, RecordedRequest]]:
        """Pairs (429 response, later request of the same method) where the later request
        came too early. Slack's limits, and so its Retry-After, are per method: another
        method may be called meanwhile (a sync's next history page while users.info waits)."""
        with self._lock:
            log = list(self.requests)
        violations = []
        for i, limited in enumerate(log):
            if limited.retry_after is None:
                continue
            for later in log[i + 1 :]:
                if later.method != limited.method:
                    continue
                if later.time - limited.time < limited.retry_after:
                    violations.append((limited, later))
        return violations

    # ------------------------------------------------------------------ request handling

    def handle(
        self, *, method: str, params: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Dispatch one API call; returns (HTTP status, extra headers, JSON body)."""
        with self._lock:
            self._request_counter += 1
            arrived = time.monotonic()
            status, headers, body = self._dispatch(method=method, params=params, token=token)
            self.requests.append(
                RecordedRequest(
                    time=arrived,
                    method=method,
                    params=dict(params),
                    token=token,
                    status=status,
                    rate_limited=status == 429,
                    retry_after=int(headers["Retry-After"]) if "Retry-After" in headers else None,
                )
            )
            return status, headers, body

    def _dispatch(
        self, *, method: str, params: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Apply injected failures and the rate limit, then call the method handler."""
        for i, failure in enumerate(self._forced_failures):
            only_method, status, after = failure
            if only_method is None or only_method == method:
                if after:
                    failure[2] -= 1
                    break
                del self._forced_failures[i]
                return status, {}, {"ok": False, "error": "internal_error"}
        if (
            self.rate_limit_every
            and self._request_counter % self.rate_limit_every == 0
            and (self.rate_limit_methods is None or method in self.rate_limit_methods)
        ):
            return (
                429,
                {"Retry-After": str(self.retry_after)},
                {"ok": False, "error": "ratelimited"},
            )
        handler = _METHODS.get(method)
        if handler is None:
            return 200, {}, {"ok": False, "error": "unknown_method"}
        if not token:
            return 200, {}, {"ok": False, "error": "not_authed"}
        workspace = self.workspaces.get(token)
        if workspace is None:
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        if workspace.revoked_error:
            return 200, {}, {"ok": False, "error": workspace.revoked_error}
        try:
            body = handler(self, workspace, params)
        except _ApiError as exc:
            return 200, {}, {"ok": False, "error": exc.code}
        return 200, {}, {"ok": True, **body}

    def _auth_test(self, workspace: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{workspace.team_id.lower()}.slack.com/",
            "team": workspace.team,
            "user": "zenith",
            "team_id": workspace.team_id,
            "user_id": workspace.bot_user_id,
            "bot_id": workspace.bot_id,
            "is_enterprise_install": False,
        }

    def _history(self, workspace: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        chan = self._channel(params)
        limit = _int_param(params, "limit", DEFAULT_PAGE_SIZE)
        inclusive = _bool_param(params, "inclusive")
        oldest = _ts_param(params, "oldest")
        latest = _ts_param(params, "latest")
        # Newest first, like Slack; the cursor is an upper bound so new messages never repeat.
        window = [
            m
            for m in reversed(chan.messages)
            if _in_window(ts_to_micros(m["ts"]), oldest, latest, inclusive)
        ]
        cursor = params.get("cursor")
        if cursor:
            upper = _decode_cursor("next_ts", cursor)
            if upper is None:
                raise _ApiError("invalid_cursor")
            window = [m for m in window if ts_to_micros(m["ts"]) <= upper]
        page, rest = window[:limit], window[limit:]
        next_cursor = _encode_cursor("next_ts", ts_to_micros(rest[0]["ts"])) if rest else ""
        return {
            "messages": [copy.deepcopy(self._mangled.get(m["ts"], m)) for m in page],
            "has_more": bool(rest),
            "pin_count": 0,
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _replies(self, workspace: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        chan = self._channel(params)
        ts = params.get("ts")
        if not ts:
            raise _ApiError("invalid_arguments")
        parent = self._find_parent(chan, str(ts))
        if parent is None:
            raise _ApiError("thread_not_found")
        limit = _int_param(params, "limit", DEFAULT_PAGE_SIZE)
        inclusive = _bool_param(params, "inclusive")
        oldest = _ts_param(params, "oldest")
        latest = _ts_param(params, "latest")
        replies = [
            r
            for r in chan.replies.get(parent["ts"], [])
            if _in_window(ts_to_micros(r["ts"]), oldest, latest, inclusive)
        ]
        cursor = params.get("cursor")
        if cursor:
            lower = _decode_cursor("reply_ts", cursor)
            if lower is None:
                raise _ApiError("invalid_cursor")
            replies = [r for r in replies if ts_to_micros(r["ts"]) >= lower]
        # Slack repeats the parent at the top of every page, so it counts against the limit.
        page, rest = replies[: max(limit - 1, 1)], replies[max(limit - 1, 1) :]
        next_cursor = _encode_cursor("reply_ts", ts_to_micros(rest[0]["ts"])) if rest else ""
        return {
            "messages": copy.deepcopy([parent, *page]),
            "has_more": bool(rest),
            "response_metadata": {"next_cursor": next_cursor},
        }

    def _users_info(self, workspace: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user", "")))
        if user is None:
            raise _ApiError("user_not_found")
        return {"user": copy.deepcopy(user)}

    def _post_message(self, workspace: Workspace, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        text = params.get("text")
        if not channel:
            raise _ApiError("channel_not_found")
        if not text and not params.get("blocks"):
            raise _ApiError("no_text")
        thread_ts = params.get("thread_ts") or None
        # Store it as the bot's own message, so history sync sees it the way it would on Slack.
        message = self.add_message(
            str(channel),
            str(text or ""),
            user=workspace.bot_user_id,
            thread_ts=str(thread_ts) if thread_ts else None,
            bot_id=workspace.bot_id,
        )
        self.posted.append({"channel": channel, "token": workspace.token, **message})
        return {"channel": channel, "ts": message["ts"], "message": message}

    # ------------------------------------------------------------------ helpers

    def _channel(self, params: dict[str, Any]) -> _Channel:
        chan = self.channels.get(str(params.get("channel", "")))
        if chan is None:
            raise _ApiError("channel_not_found")
        return chan

    @staticmethod
    def _find_parent(chan: _Channel, ts: str) -> dict[str, Any] | None:
        found = SlackApiServer._find(chan, ts)
        if found is None or found.get("thread_ts", found["ts"]) != found["ts"]:
            return None
        return found

    @staticmethod
    def _find(chan: _Channel, ts: str) -> dict[str, Any] | None:
        try:
            return chan.by_ts.get(ts_to_micros(ts))
        except InvalidOperation:
            return None

    @staticmethod
    def _insert_sorted(messages: list[dict[str, Any]], message: dict[str, Any]) -> None:
        key = ts_to_micros(message["ts"])
        # Appending is the common case (auto ts); fall back to a scan for explicit old ts.
        if not messages or ts_to_micros(messages[-1]["ts"]) < key:
            messages.append(message)
            return
        index = next(i for i, m in enumerate(messages) if ts_to_micros(m["ts"]) > key)
        messages.insert(index, message)


_METHODS = {
    "auth.test": SlackApiServer._auth_test,
    "conversations.history": SlackApiServer._history,
    "conversations.replies": SlackApiServer._replies,
    "users.info": SlackApiServer._users_info,
    "chat.postMessage": SlackApiServer._post_message,
}


def _int_param(params: dict[str, Any], name: str, default: int) -> int:
    """Read a positive int param clamped to Slack's maximum page size."""
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError) as exc:
        raise _ApiError("invalid_arguments") from exc
    if value <= 0:
        return default
    return min(value, MAX_PAGE_SIZE)


def _bool_param(params: dict[str, Any], name: str) -> bool:
    """Slack booleans arrive as "1"/"0", "true"/"false" or JSON booleans."""
    raw = params.get(name)
    return raw is True or str(raw).lower() in ("1", "true")


def _ts_param(params: dict[str, Any], name: str) -> int | None:
    """Read an optional ts bound as microseconds."""
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        return ts_to_micros(str(raw))
    except InvalidOperation as exc:
        raise _ApiError("invalid_ts_" + name) from exc


def _in_window(key: int, oldest: int | None, latest: int | None, inclusive: bool) -> bool:
    """Slack's oldest/latest bounds are exclusive unless ``inclusive`` is set."""
    if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
        return False
    return not (latest is not None and (key > latest or (key == latest and not inclusive)))


def _make_handler(api: SlackApiServer) -> type[BaseHTTPRequestHandler]:
    """Build a request handler class bound to ``api``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeSlack/1.0"

        def do_POST(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            # Keep pytest output clean; the request log lives on ``api.requests``.
            return

        def _serve(self) -> None:
            split = urlsplit(self.path)
            prefix = "/api/"
            if not split.path.startswith(prefix):
                self._reply(404, {}, {"ok": False, "error": "unknown_method"})
                return
            method = split.path[len(prefix) :]
            params: dict[str, Any] = dict(parse_qsl(split.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if raw and content_type == "application/json":
                try:
                    params.update(json.loads(raw))
                except json.JSONDecodeError:
                    self._reply(200, {}, {"ok": False, "error": "invalid_json"})
                    return
            elif raw:
                params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            token = params.pop("token", None)
            auth = self.headers.get("Authorization") or ""
            if auth.lower().startswith("bearer "):
                token = auth[len("bearer ") :].strip()
            status, headers, body = api.handle(method=method, params=params, token=token)
            self._reply(status, headers, body)

        def _reply(self, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def slack_api() -> Iterator[SlackApiServer]:
    """A fresh running Slack API server; ``DEFAULT_TOKEN`` is valid for ``DEFAULT_TEAM_ID``."""
    server = SlackApiServer().start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------
# --- OAuth v2: "Add to Slack", token rotation, uninstall events ---
# ------------------------------------------------------------------------------

OAUTH_CLIENT_ID = "1111.2222"
OAUTH_CLIENT_SECRET = "oauth-client-secret"
OAUTH_APP_ID = "A0OAUTH01"


@dataclass
class OAuthTeam:
    """The team the authorize page approves for, and how its tokens are issued."""

    team_id: str
    team: str
    bot_user_id: str = "UBOTOAUTH"
    bot_id: str = "BBOTOAUTH"
    installer: str = "UINSTALLER"
    # Rotation on: oauth.v2.access answers refresh_token + expires_in (Slack's 12 hours).
    rotation: bool = False
    expires_in: int = 43200


class SlackOAuthServer(SlackApiServer):
    """``SlackApiServer`` plus Slack's OAuth side, served on the same port.

    * ``GET /oauth/v2/authorize``: checks the client id, then approves at once for
      ``approving`` (or answers ``error=access_denied`` when ``consent`` is False) by
      redirecting to ``redirect_uri`` (or the app's registered ``redirect_url``) with a
      single-use code and the state.
    * ``POST /api/oauth.v2.access``: client credentials by HTTP Basic or form fields;
      ``code`` exchanges a code, ``grant_type=refresh_token`` rotates (each refresh token
      works once, like Slack's). Issued tokens are valid for ``auth.test`` and the rest.
    * Access tokens of rotating teams expire (``token_expired``) at their ``expires_in``
      or when a test calls ``expire_token``.
    * ``uninstall(team_id)`` revokes the team's tokens and delivers signed
      ``app_uninstalled`` and ``tokens_revoked`` events to ``events_url``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_id = OAUTH_CLIENT_ID
        self.client_secret = OAUTH_CLIENT_SECRET
        self.redirect_url: str | None = None
        self.approving: OAuthTeam | None = None
        self.consent = True
        self.events_url: str | None = None
        self.signing_secret: str | None = None
        self._codes: dict[str, tuple[OAuthTeam, str | None]] = {}
        self._refresh_tokens: dict[str, OAuthTeam] = {}
        self.token_expiry: dict[str, float] = {}
        self._expire_after: tuple[str, int] | None = None
        self._serial = 0

    @property
    def authorize_url(self) -> str:
        return self.url.replace("/api/", "/oauth/v2/authorize")

    def approve(self, team: OAuthTeam) -> OAuthTeam:
        """The team whose admin approves the next installs."""
        with self._lock:
            self.approving = team
        return team

    def expire_token(self, token: str) -> None:
        """Make ``token`` expired now (Slack answers ``token_expired``)."""
        with self._lock:
            self.token_expiry[token] = 0

    def tokens_of(self, team_id: str) -> list[str]:
        with self._lock:
            return [t for t, ws in self.workspaces.items() if ws.team_id == team_id]

    def revoke_refresh_tokens(self) -> None:
        """Forget every refresh token (as after the app's tokens were revoked)."""
        with self._lock:
            self._refresh_tokens.clear()

    def refresh_count(self) -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if r.method == "oauth.v2.access" and r.params.get("grant_type") == "refresh_token"
            )

    # ------------------------------------------------------------------ authorize

    def authorize(self, params: dict[str, Any]) -> tuple[int, str]:
        """(HTTP status, Location or error text) of the consent page."""
        with self._lock:
            if params.get("client_id") != self.client_id:
                return 400, "invalid_client_id"
            redirect = params.get("redirect_uri") or self.redirect_url
            if not redirect or (self.redirect_url and redirect != self.redirect_url):
                return 400, "bad_redirect_uri"
            state = params.get("state", "")
            if not self.consent or self.approving is None:
                return 302, f"{redirect}?{urlencode({'error': 'access_denied', 'state': state})}"
            code = self._new("code")
            self._codes[code] = (self.approving, params.get("redirect_uri"))
            return 302, f"{redirect}?{urlencode({'code': code, 'state': state})}"

    # ------------------------------------------------------------------ oauth.v2.access

    def _new(self, kind: str) -> str:
        self._serial += 1
        return f"{kind}-{self._serial:04d}-{time.monotonic_ns() % 10**6:06d}"

    def _issue(self, team: OAuthTeam) -> dict[str, Any]:
        token = f"xoxb-{team.team_id.lower()}-{self._new('tok')}"
        self.add_workspace(
            token=token,
            team_id=team.team_id,
            team=team.team,
            bot_user_id=team.bot_user_id,
            bot_id=team.bot_id,
        )
        answer: dict[str, Any] = {"access_token": token, "token_type": "bot"}
        if team.rotation:
            refresh = f"xoxe-1-{self._new('refresh')}"
            self._refresh_tokens[refresh] = team
            self.token_expiry[token] = time.time() + team.expires_in
            answer.update(refresh_token=refresh, expires_in=team.expires_in)
        return answer

    def oauth_access(
        self, params: dict[str, Any], basic: tuple[str, str] | None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    time=time.monotonic(),
                    method="oauth.v2.access",
                    params={k: v for k, v in params.items() if k != "client_secret"},
                    token=None,
                    status=200,
                    rate_limited=False,
                )
            )
            client_id, secret = basic or (params.get("client_id"), params.get("client_secret"))
            if client_id != self.client_id:
                return 200, {}, {"ok": False, "error": "invalid_client_id"}
            if secret != self.client_secret:
                return 200, {}, {"ok": False, "error": "bad_client_secret"}
            if params.get("grant_type") == "refresh_token":
                team = self._refresh_tokens.pop(str(params.get("refresh_token") or ""), None)
                if team is None:
                    return 200, {}, {"ok": False, "error": "invalid_refresh_token"}
                return 200, {}, {"ok": True, **self._issue(team), "team": {"id": team.team_id}}
            grant = self._codes.pop(str(params.get("code") or ""), None)
            if grant is None:
                return 200, {}, {"ok": False, "error": "invalid_code"}
            team, redirect_uri = grant
            if redirect_uri and params.get("redirect_uri") != redirect_uri:
                return 200, {}, {"ok": False, "error": "bad_redirect_uri"}
            return (
                200,
                {},
                {
                    "ok": True,
                    "app_id": OAUTH_APP_ID,
                    "authed_user": {"id": team.installer},
                    "scope": str(params.get("scope") or "channels:history,users:read"),
                    "bot_user_id": team.bot_user_id,
                    "team": {"id": team.team_id, "name": team.team},
                    "enterprise": None,
                    "is_enterprise_install": False,
                    **self._issue(team),
                },
            )

    def expire_after(self, method: str, calls: int) -> None:
        """Expire the token in use once ``calls`` more ``method`` calls succeeded with it."""
        with self._lock:
            self._expire_after = (method, calls)

    def _dispatch(
        self, *, method: str, params: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        expiry = self.token_expiry.get(token or "")
        if expiry is not None and expiry <= time.time():
            return 200, {}, {"ok": False, "error": "token_expired"}
        status, headers, body = super()._dispatch(method=method, params=params, token=token)
        pending = self._expire_after
        if pending and pending[0] == method and body.get("ok"):
            if pending[1] <= 1:
                self._expire_after = None
                self.token_expiry[token or ""] = 0
            else:
                self._expire_after = (method, pending[1] - 1)
        return status, headers, body

    # ------------------------------------------------------------------ uninstall

    def uninstall(self, team_id: str) -> list[dict[str, Any]]:
        """Revoke the team's tokens and deliver the two events Slack sends; returns them."""
        tokens = self.tokens_of(team_id)
        bots = sorted({self.workspaces[token].bot_user_id for token in tokens})
        for token in tokens:
            self.revoke(token, "token_revoked")
        events: list[dict[str, Any]] = [
            {"type": "tokens_revoked", "tokens": {"oauth": [], "bot": bots}},
            {"type": "app_uninstalled"},
        ]
        payloads = []
        for event in events:
            payload = {
                "token": "legacy",
                "team_id": team_id,
                "api_app_id": OAUTH_APP_ID,
                "event": {**event, "event_ts": f"{time.time():.6f}"},
                "type": "event_callback",
                "event_id": f"Ev{self._new('uninstall').replace('-', '').upper()[:12]}",
                "event_time": int(time.time()),
            }
            payloads.append(payload)
            if self.events_url and self.signing_secret:
                self._deliver(payload)
        return payloads

    def _deliver(self, payload: dict[str, Any]) -> int:
        body = json.dumps(payload).encode()
        stamp = str(int(time.time()))
        digest = hmac.new(
            (self.signing_secret or "").encode(), b"v0:" + stamp.encode() + b":" + body, "sha256"
        ).hexdigest()
        request = urllib.request.Request(  # noqa: S310 - a local test URL
            self.events_url or "",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Slack-Request-Timestamp": stamp,
                "X-Slack-Signature": f"v0={digest}",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status)

    def start(self) -> SlackOAuthServer:
        """Serve the Web API and the OAuth pages on one port on 127.0.0.1."""
        handler = _make_oauth_handler(self, _make_handler(self))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="slack-oauth-server",
            daemon=True,
        )
        self._thread.start()
        return self


def _make_oauth_handler(
    api: SlackOAuthServer, base: type[BaseHTTPRequestHandler]
) -> type[BaseHTTPRequestHandler]:
    class OAuthHandler(base):  # type: ignore[valid-type,misc]
        def do_GET(self) -> None:
            split = urlsplit(self.path)
            if split.path == "/oauth/v2/authorize":
                status, location = api.authorize(dict(parse_qsl(split.query)))
                if status == 302:
                    self.send_response(302)
                    self.send_header("Location", location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self._reply(status, {}, {"ok": False, "error": location})
                return
            super().do_GET()

        def do_POST(self) -> None:
            split = urlsplit(self.path)
            if split.path != "/api/oauth.v2.access":
                super().do_POST()
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            params: dict[str, Any] = dict(parse_qsl(split.query))
            params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            basic = None
            auth = self.headers.get("Authorization") or ""
            if auth.lower().startswith("basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                basic = (user, password)
            status, headers, body = api.oauth_access(params, basic)
            self._reply(status, headers, body)

    return OAuthHandler


@pytest.fixture
def slack_oauth_api() -> Iterator[SlackOAuthServer]:
    """A running ``SlackOAuthServer`` (also a full ``SlackApiServer``)."""
    server = SlackOAuthServer().start()
    try:
        yield server
    finally:
        server.stop()
