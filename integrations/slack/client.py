"""Thin, Django-free wrapper over slack_sdk's WebClient used by the Slack integration.

Everything here is plain Python: it takes a ``WebClient`` (built by ``make_client``),
returns dicts/dataclasses, and maps slack_sdk failures onto three exception types:

* ``SlackAuthError`` - the token is dead (``invalid_auth``, ``account_inactive``,
  ``token_revoked``, ``not_authed``); retrying will not help, the install must be fixed.
* ``SlackTransientError`` - network errors, HTTP 5xx, and 429 once slack_sdk's own
  Retry-After retries are exhausted; retry later (``retry_after`` hints how much later).
* ``SlackClientError`` - any other Slack error code (``channel_not_found`` ...), in ``.error``.

Both specific errors subclass ``SlackClientError``, so catch them before the base class.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol, TypeVar
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.web import SlackResponse

from taskops.errors import TransientError
from tickets.text import storable_text

__all__ = [
    "AUTH_ERROR_CODES",
    "HistoryPage",
    "MessageKind",
    "RotatingTokenClient",
    "SlackAuthError",
    "SlackClientError",
    "SlackIdentity",
    "SlackTransientError",
    "SlackUser",
    "TokenSource",
    "auth_identity",
    "auth_test",
    "classify_message",
    "history_page",
    "iter_history",
    "iter_replies",
    "make_client",
    "make_rotating_client",
    "post_message",
    "user_info",
]

DEFAULT_BASE_URL = "https://slack.com/api/"

AUTH_ERROR_CODES = frozenset({"invalid_auth", "account_inactive", "token_revoked", "not_authed"})
# Slack sometimes reports server trouble as HTTP 200 + ok=false with one of these codes.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "ratelimited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
_USER_MISSING_CODES = frozenset({"user_not_found", "user_not_visible"})
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    URLError,
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,
)

T = TypeVar("T")


class SlackClientError(Exception):
    """A Slack API call failed; ``error`` is Slack's error code (or a short local code)."""

    def __init__(self, error: str, *, method: str | None = None, status: int | None = None) -> None:
        super().__init__(f"{method or 'slack'}: {error}" + (f" (HTTP {status})" if status else ""))
        self.error = error
        self.method = method
        self.status = status


class SlackAuthError(SlackClientError):
    """The token is invalid, revoked or its account is inactive."""


class SlackTransientError(SlackClientError, TransientError):
    """A failure worth retrying later: network, 5xx, or rate limit after retries ran out."""

    def __init__(
        self,
        error: str,
        *,
        method: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error, method=method, status=status)
        self.retry_after = retry_after


@dataclass(frozen=True)
class HistoryPage:
    """One page of ``conversations.history``; ``next_cursor`` is None on the last page."""

    messages: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class SlackUser:
    """The fields of a Slack user the ticket system cares about."""

    id: str
    name: str
    real_name: str
    email: str | None
    is_bot: bool = False
    deleted: bool = False


@dataclass(frozen=True)
class SlackIdentity:
    """Who a token is: workspace, bot user and bot id (from ``auth.test``)."""

    team_id: str
    user_id: str | None
    bot_id: str | None


def make_client(
    *,
    token: str,
    base_url: str = DEFAULT_BASE_URL,
    max_rate_limit_retries: int = 5,
    max_connection_retries: int = 2,
    timeout: int = 30,
) -> WebClient:
    """Build a WebClient that sleeps out 429 Retry-After and retries dropped connections."""
    if not base_url.endswith("/"):
        # slack_sdk joins "<base_url><method>", so a missing slash would corrupt every URL.
        base_url += "/"
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=max_connection_retries),
            RateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries),
        ],
    )


def _call(method: str, fn: Callable[[], T]) -> T:
    """Run one slack_sdk call and translate its failures into this module's exceptions."""
    try:
        return fn()
    except SlackApiError as exc:
        raise _translate_api_error(method, exc) from exc
    except SlackRequestError as exc:
        # Raised for a malformed URL/proxy/arguments: a local bug, not worth retrying.
        raise SlackClientError("request_error", method=method) from exc
    except _NETWORK_ERRORS as exc:
        raise SlackTransientError("network_error", method=method) from exc


def _translate_api_error(method: str, exc: SlackApiError) -> SlackClientError:
    """Map a SlackApiError to auth / transient / generic client error."""
    response = exc.response
    status = getattr(response, "status_code", None)
    data = getattr(response, "data", None)
    error = str(data.get("error") or "unknown_error") if isinstance(data, dict) else "unknown_error"
    if error in AUTH_ERROR_CODES:
        return SlackAuthError(error, method=method, status=status)
    if status == 429 or (status is not None and status >= 500) or error in TRANSIENT_ERROR_CODES:
        return SlackTransientError(
            error, method=method, status=status, retry_after=_retry_after(response)
        )
    return SlackClientError(error, method=method, status=status)


def _retry_after(response: Any) -> float | None:
    """Read Retry-After seconds from a slack_sdk response, if present."""
    headers = getattr(response, "headers", None) or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return None
    return None


def _next_cursor(response: SlackResponse) -> str | None:
    """Slack signals the last page with a missing or empty ``next_cursor``."""
    metadata = response.get("response_metadata") or {}
    return metadata.get("next_cursor") or None


def history_page(
    *, client: WebClient, channel: str, oldest: str | None, cursor: str | None, page_size: int
) -> HistoryPage:
    """One ``conversations.history`` page (the first when ``cursor`` is None)."""
    response = _call(
        "conversations.history",
        lambda: client.conversations_history(
            channel=channel, oldest=oldest, cursor=cursor, limit=page_size
        ),
    )
    return HistoryPage(
        messages=list(response.get("messages") or []), next_cursor=_next_cursor(response)
    )


def iter_history(
    *,
    client: WebClient,
    channel: str,
    oldest: str | None,
    cursor: str | None,
    page_size: int = 200,
    prefetch: bool = False,
) -> Iterator[HistoryPage]:
    """Yield ``conversations.history`` pages newest-first, starting at ``cursor`` if given.

    Save ``page.next_cursor`` after committing each page; to resume, call again with the
    same ``oldest`` and the saved cursor. ``oldest`` is exclusive (Slack's default), so the
    newest ts already stored can be passed as-is for incremental syncs.

    With ``prefetch`` the next page is requested on a thread while the caller works on the
    one just yielded, so the API's round trip hides behind the caller's writes. Pages still
    come one at a time and in order, and a failure of the next page is raised when the
    caller asks for it, as without ``prefetch``. The thread does HTTP only, with the token
    current when it starts; a token Slack calls expired is renewed here, by the caller's
    thread, and the page asked for again.
    """
    fetch = partial(history_page, channel=channel, oldest=oldest, page_size=page_size)
    seen_cursors: set[str] = set()
    executor = ThreadPoolExecutor(1, thread_name_prefix="slack-history") if prefetch else None
    try:
        page = fetch(client=client, cursor=cursor)
        while True:
            next_cursor = page.next_cursor
            ahead: tuple[Future[HistoryPage], str | None] | None = None
            if executor is not None and next_cursor and next_cursor not in seen_cursors:
                detached, token = _detached(client)
                ahead = (executor.submit(fetch, client=detached, cursor=next_cursor), token)
            yield page
            if next_cursor is None:
                return
            # A cursor that comes back twice would loop forever; treat it as a Slack-side fault.
            if next_cursor in seen_cursors:
                raise SlackTransientError("cursor_loop", method="conversations.history")
            seen_cursors.add(next_cursor)
            if ahead is None:
                page = fetch(client=client, cursor=next_cursor)
                continue
            future, token = ahead
            try:
                page = future.result()
            except SlackClientError as exc:
                if exc.error != "token_expired" or not isinstance(client, RotatingTokenClient):
                    raise
                client.token = client.tokens.renew(expired=token or "")
                page = fetch(client=client, cursor=next_cursor)
    finally:
        if executor is not None:
            # A caller that stops early does not wait for a page it will not use.
            executor.shutdown(wait=False, cancel_futures=True)


def _detached(client: WebClient) -> tuple[WebClient, str | None]:
    """A client for another thread: a rotating one's current token, fixed; and that token.

    Renewing a token writes to the database, which belongs to the caller's thread.
    """
    if not isinstance(client, RotatingTokenClient):
        return client, client.token
    token = client.tokens.current()
    detached = WebClient(
        token=token,
        base_url=client.base_url,
        timeout=client.timeout,
        ssl=client.ssl,
        proxy=client.proxy,
        headers=client.headers,
        retry_handlers=client.retry_handlers,
    )
    return detached, token


def iter_replies(
    *,
    client: WebClient,
    channel: str,
    thread_ts: str,
    oldest: str | None = None,
    page_size: int = 200,
) -> Iterator[dict[str, Any]]:
    """Yield a thread's parent once, then its replies oldest-first (newer than ``oldest``).

    Slack repeats the parent at the top of every page, so it is de-duplicated here; use
    ``classify_message`` ("ticket" vs "reply") to tell the two apart.
    """
    cursor: str | None = None
    seen: set[str] = set()
    while True:
        response = _call(
            "conversations.replies",
            lambda c=cursor: client.conversations_replies(
                channel=channel, ts=thread_ts, oldest=oldest, cursor=c, limit=page_size
            ),
        )
        for message in response.get("messages") or []:
            ts = message.get("ts")
            if ts in seen:
                continue
            seen.add(ts)
            yield message
        cursor = _next_cursor(response)
        if cursor is None:
            return


def user_info(*, client: WebClient, user_id: str) -> SlackUser | None:
    """Look up a user; None when Slack says the user does not exist or is not visible."""
    try:
        response = _call("users.info", lambda: client.users_info(user=user_id))
    except SlackClientError as exc:
        if exc.error in _USER_MISSING_CODES:
            return None
        raise
    user = response.get("user") or {}
    profile = user.get("profile") or {}
    email = profile.get("email")
    return SlackUser(
        id=user.get("id", user_id),
        name=storable_text(str(user.get("name") or "")),
        real_name=storable_text(str(user.get("real_name") or profile.get("real_name") or "")),
        email=storable_text(str(email)) if email else None,
        is_bot=bool(user.get("is_bot")),
        deleted=bool(user.get("deleted")),
    )


def auth_identity(*, client: WebClient) -> SlackIdentity:
    """Call ``auth.test`` and return team, bot user and bot ids."""
    response = _call("auth.test", client.auth_test)
    return SlackIdentity(
        team_id=response["team_id"],
        user_id=response.get("user_id"),
        bot_id=response.get("bot_id"),
    )


def auth_test(*, client: WebClient) -> str:
    """Validate the token and return its workspace's team_id."""
    return auth_identity(client=client).team_id


def post_message(
    *, client: WebClient, channel: str, text: str, thread_ts: str | None = None
) -> str:
    """Post a message and return its ts.

    Not idempotent: a connection reset after Slack accepted the post is retried by the
    connection handler, which can (rarely) post twice.
    """
    response = _call(
        "chat.postMessage",
        lambda: client.chat_postMessage(channel=channel, text=text, thread_ts=thread_ts),
    )
    return str(response["ts"])


MessageKind = Literal["ticket", "reply", "ignore", "changed", "deleted"]

# Subtypes that carry a human's content; every other subtype (channel_join, bot_message,
# pinned_item, channel_topic, message_replied, ...) is housekeeping and ignored.
_CONTENT_SUBTYPES = frozenset({"file_share", "thread_broadcast", "me_message"})
DELETED_SUBTYPES = frozenset({"message_deleted", "tombstone"})


def _is_from_bot(message: dict[str, Any], bot_user_id: str | None) -> bool:
    """True for bot posts, including our own bot's (matched by user id)."""
    if message.get("bot_id") or message.get("subtype") == "bot_message":
        return True
    return bot_user_id is not None and message.get("user") == bot_user_id


def classify_message(message: dict[str, Any], *, bot_user_id: str | None) -> MessageKind:
    """Classify a Slack message dict as "ticket", "reply", "ignore", "changed" or "deleted".

    Accepts both shapes that carry the same fields: items of ``conversations.history`` /
    ``conversations.replies`` and Events API ``event`` payloads of type ``message`` or
    ``app_mention`` (extra keys such as ``channel``, ``event_ts``, ``channel_type`` are ignored).

    * ``message_changed`` -> "changed" (the new version is in ``message["message"]``).
    * ``message_deleted`` -> "deleted" (the old ts is in ``deleted_ts``/``previous_message``);
      ``tombstone`` (a deleted thread parent still listed by history) is also "deleted".
      Edits and deletions of bot messages are "ignore".
    * bot posts (``bot_id``, subtype ``bot_message``, or ``user == bot_user_id``), messages
      without a user, other event types and non-content subtypes -> "ignore".
    * ``thread_ts`` present and different from ``ts`` -> "reply" (incl. ``thread_broadcast``).
    * otherwise (top-level message or thread parent, where ``thread_ts == ts``) -> "ticket".
    """
    if message.get("type", "message") not in ("message", "app_mention"):
        return "ignore"
    subtype = message.get("subtype")
    if subtype == "message_changed":
        inner = message.get("message") or {}
        return "ignore" if _is_from_bot(inner, bot_user_id) else "changed"
    if subtype in DELETED_SUBTYPES:
        previous = message.get("previous_message") or {}
        return "ignore" if _is_from_bot(previous, bot_user_id) else "deleted"
    if subtype is not None and subtype not in _CONTENT_SUBTYPES:
        return "ignore"
    if _is_from_bot(message, bot_user_id) or not message.get("user"):
        return "ignore"
    thread_ts = message.get("thread_ts")
    if thread_ts and thread_ts != message.get("ts"):
        return "reply"
    return "ticket"


# ------------------------------------------------------------------------------
# --- Rotating tokens ---
# ------------------------------------------------------------------------------


class TokenSource(Protocol):
    """Hands out a workspace's current bot token and renews it when Slack says it expired."""

    def current(self) -> str: ...

    def renew(self, *, expired: str) -> str: ...


class RotatingTokenClient(WebClient):
    """A WebClient that asks its token source before every call (so a long sync renews
    its token between pages) and, once per call, renews a token Slack calls expired."""

    def __init__(self, *, tokens: TokenSource, **kwargs: Any) -> None:
        # The token is asked for at the first call, so building a client never fails.
        super().__init__(token=None, **kwargs)
        self.tokens = tokens

    def api_call(self, api_method: str, **kwargs: Any) -> SlackResponse:  # type: ignore[override]
        self.token = self.tokens.current()
        try:
            return super().api_call(api_method, **kwargs)
        except SlackApiError as exc:
            data = getattr(exc.response, "data", None)
            if not isinstance(data, dict) or data.get("error") != "token_expired":
                raise
        # Clocks disagree or Slack expired it early: renew once and repeat the call.
        self.token = self.tokens.renew(expired=self.token or "")
        return super().api_call(api_method, **kwargs)


def make_rotating_client(
    *,
    tokens: TokenSource,
    base_url: str = DEFAULT_BASE_URL,
    max_rate_limit_retries: int = 5,
    max_connection_retries: int = 2,
    timeout: int = 30,
) -> RotatingTokenClient:
    """``make_client`` for a token that rotates (``tokens`` renews it when it expires)."""
    if not base_url.endswith("/"):
        base_url += "/"
    return RotatingTokenClient(
        tokens=tokens,
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=max_connection_retries),
            RateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries),
        ],
    )
