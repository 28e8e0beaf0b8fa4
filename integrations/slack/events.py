"""The Slack Events API endpoint: a slack-bolt app mounted in Django.

Bolt verifies the signature and timestamp (401 otherwise) and answers the
``url_verification`` handshake; our listener records the event in the event-id ledger
and enqueues its processing after commit, so Slack gets its 200 within milliseconds and
a redelivery finds the row and does nothing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any, cast

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from slack_bolt import App, BoltRequest
from slack_bolt.adapter.django import SlackRequestHandler
from slack_bolt.authorization import AuthorizeResult

from integrations.slack import services as slack_services
from integrations.slack.client import SlackClientError
from integrations.slack.services.install import WorkspaceTokens

logger = logging.getLogger(__name__)

_handlers: dict[str, SlackRequestHandler] = {}
_handlers_lock = threading.Lock()


def _authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult | None:
    """Known workspaces only; the bot identity lets Bolt drop our own bot's events.

    Bolt passes arguments by parameter name, so these must stay positional-or-keyword.
    """
    workspace = slack_services.slack_workspace_for_team(team_id=team_id or "")
    if workspace is None:
        return None
    bot_token = None
    if workspace.enabled:
        # A rotating token is renewed here when due, as Bolt's own authorize does; the
        # event is still recorded when that fails (its task renews or reports it).
        try:
            bot_token = WorkspaceTokens(workspace).current()
        except SlackClientError as exc:
            logger.warning("slack token refresh failed for %s: %s", workspace.team_id, exc)
    return AuthorizeResult(
        enterprise_id=enterprise_id,
        team_id=workspace.team_id,
        bot_user_id=workspace.bot_user_id or None,
        bot_id=workspace.bot_id or None,
        bot_token=bot_token,
    )


def _on_event(body: dict[str, Any], request: BoltRequest) -> None:
    retry = next(iter(request.headers.get("x-slack-retry-num") or []), "")
    slack_services.slack_event_receive(
        payload=body, retry_num=int(retry) if retry.isdigit() else None
    )


def build_app(*, signing_secret: str) -> App:
    """The Bolt app: one listener for every event type; work happens after the ack."""
    app = App(
        name="zenith",
        signing_secret=signing_secret,
        authorize=cast(Callable[..., AuthorizeResult], _authorize),
        # The listener only writes the ledger row and enqueues: done before responding,
        # so a failed write answers 500 and Slack delivers the event again.
        process_before_response=True,
        logger=logging.getLogger("integrations.slack.bolt"),
    )
    app.event(re.compile(r".*"))(_on_event)
    return app


def _handler() -> SlackRequestHandler | None:
    secret = settings.SLACK_SIGNING_SECRET
    if not secret:
        return None
    with _handlers_lock:
        handler = _handlers.get(secret)
        if handler is None:
            handler = _handlers[secret] = SlackRequestHandler(build_app(signing_secret=secret))
        return handler


@csrf_exempt
@require_POST
def slack_events_view(request: HttpRequest) -> HttpResponse:
    """POST /api/v1/integrations/slack/events (signature-checked by Bolt)."""
    handler = _handler()
    if handler is None:
        # Without a secret nothing can be verified; refuse rather than trust the caller.
        return JsonResponse({"detail": "SLACK_SIGNING_SECRET is not configured"}, status=503)
    return handler.handle(request)
