"""Fixtures of the Slack tests: a configured workspace and channel on the local Slack API
server (``slack_api``, from tests.support.slack_server), signed Events API requests."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from integrations.models import SlackChannel, SlackWorkspace
from tests.integrations.factories import SlackChannelFactory, SlackWorkspaceFactory
from tests.support.slack_server import (
    DEFAULT_BOT_ID,
    DEFAULT_BOT_USER_ID,
    DEFAULT_TEAM_ID,
    DEFAULT_TOKEN,
    DEFAULT_USER_ID,
    SlackApiServer,
)
from tickets.models import Organization

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL_ID = "C0000001"


@pytest.fixture
def slack_settings(settings: Any, slack_api: SlackApiServer) -> Any:
    """Point the Web API at the local server and set the signing secret."""
    settings.SLACK_API_URL = slack_api.url
    settings.SLACK_SIGNING_SECRET = SIGNING_SECRET
    settings.SLACK_HISTORY_PAGE_SIZE = 50
    return settings


@pytest.fixture
def workspace(organization: Organization, slack_settings: Any) -> SlackWorkspace:
    return SlackWorkspaceFactory(
        organization=organization,
        team_id=DEFAULT_TEAM_ID,
        name="Acme Slack",
        bot_token=DEFAULT_TOKEN,
        bot_user_id=DEFAULT_BOT_USER_ID,
        bot_id=DEFAULT_BOT_ID,
        # As slack_workspace_create leaves it: auth.test proved the token is the team's.
        verified_team_id=DEFAULT_TEAM_ID,
        verified_at=timezone.now(),
    )


@pytest.fixture
def channel(workspace: SlackWorkspace, slack_api: SlackApiServer) -> SlackChannel:
    slack_api.add_channel(CHANNEL_ID)
    slack_api.add_user(DEFAULT_USER_ID, real_name="Dana Scully", email="dana@acme.test")
    return SlackChannelFactory(workspace=workspace, channel_id=CHANNEL_ID, name="help")


def event_payload(
    event: dict[str, Any], *, event_id: str | None = None, team_id: str = DEFAULT_TEAM_ID
) -> dict[str, Any]:
    """An Events API ``event_callback`` envelope around ``event``."""
    return {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "api_app_id": "A0000001",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
    }


def message_event(
    text: str,
    *,
    ts: str,
    user: str = DEFAULT_USER_ID,
    channel: str = CHANNEL_ID,
    thread_ts: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    event = {
        "type": "message",
        "channel": channel,
        "user": user,
        "text": text,
        "ts": ts,
        "event_ts": ts,
        "channel_type": "channel",
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def signed_headers(
    body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """The headers Slack sends: request timestamp and v0 HMAC-SHA256 signature."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + stamp.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": f"v0={digest}",
    }


@dataclass
class HttpAnswer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float = 30) -> HttpAnswer:
    """A real HTTP POST; error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return HttpAnswer(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return HttpAnswer(exc.code, exc.read())


@pytest.fixture
def post_event(live_server: Any, slack_settings: Any) -> Callable[..., HttpAnswer]:
    """POST a signed Events API payload to the live endpoint."""
    url = f"{live_server.url}/api/v1/integrations/slack/events"

    def post(payload: dict[str, Any], *, retry_num: int | None = None, **sign: Any) -> HttpAnswer:
        body = json.dumps(payload).encode()
        headers = signed_headers(body, **sign)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return http_post(url, body, headers)

    post.url = url  # type: ignore[attr-defined]
    return post


def wait_until(
    predicate: Callable[[], Any], *, timeout: float = 30, what: str = "condition"
) -> Any:
    """Poll until ``predicate()`` is truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ------------------------------------------------------------------------------
# --- "Add to Slack" (OAuth v2) ---
# ------------------------------------------------------------------------------

CALLBACK_PATH = "/api/v1/integrations/slack/oauth/callback"
INSTALL_PATH = "/api/v1/integrations/slack/install"


@pytest.fixture
def oauth_settings(slack_settings: Any, slack_api: Any) -> Any:
    """The app's OAuth credentials and Slack's consent page on the local server.

    Modules using it override ``slack_api`` with ``slack_oauth_api`` (a superset).
    """
    from tests.support.slack_server import OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET

    slack_settings.SLACK_CLIENT_ID = OAUTH_CLIENT_ID
    slack_settings.SLACK_CLIENT_SECRET = OAUTH_CLIENT_SECRET
    slack_settings.SLACK_OAUTH_BASE_URL = slack_api.authorize_url
    slack_settings.SLACK_OAUTH_REDIRECT_URI = ""
    # The redirect URL registered with the app (Slack sends the browser back there).
    slack_api.redirect_url = f"http://testserver{CALLBACK_PATH}"
    return slack_settings


def consent(authorize_url: str) -> str:
    """The browser's visit to Slack's consent page: returns where Slack redirects it."""
    parts = urlsplit(authorize_url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        response.read()
        assert response.status == 302, f"consent page answered {response.status}"
        return str(response.getheader("Location"))
    finally:
        connection.close()


def local_path(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def install_over_http(client: Any, organization: Organization, **headers: Any) -> Any:
    """Start the install as the logged-in ``client``, consent at Slack, follow the callback."""
    started = client.get(f"{INSTALL_PATH}?organization={organization.pk}")
    assert started.status_code == 302, started.content
    return client.get(local_path(consent(started["Location"])), **headers)
