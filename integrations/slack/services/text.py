"""Small Slack helpers: message keys, timestamps, plain text and subjects."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from django.conf import settings
from slack_sdk import WebClient

from integrations.models import (
    SlackWorkspace,
)
from integrations.slack.client import (
    make_rotating_client,
)
from integrations.slack.services.install import WorkspaceTokens

logger = structlog.get_logger(__name__)
SUBJECT_MAX_CHARS = 120


def slack_external_id(*, team_id: str, channel_id: str, ts: str) -> str:
    """The natural key of a Slack message, used as the ticket's or follow-up's external id."""
    return f"{team_id}:{channel_id}:{ts}"


def _ts_key(ts: str | None) -> Decimal:
    """A Slack ts as a number, for comparisons ("" and garbage sort lowest)."""
    try:
        return Decimal(ts) if ts else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def _ts_max(*values: str | None) -> str:
    present = [v for v in values if v]
    return max(present, key=_ts_key) if present else ""


def _ts_datetime(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromtimestamp(float(ts), tz=UTC)
    except (ValueError, OverflowError):
        return None


_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def slack_plain_text(text: str) -> str:
    """Slack mrkdwn as plain text: links and channel names readable, entities unescaped."""

    def replace(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("#C"):
            return f"#{label}" if label else target
        if target.startswith(("@U", "@W")):
            return f"@{label}" if label else target
        if target.startswith("!"):
            return f"@{label or target[1:].split('^')[0]}"
        return label or target

    # Slack escapes only &, < and >; the rest of the text is as typed. NUL and lone
    # surrogates were removed where the message came in (ingest._storable).
    return html.unescape(_LINK.sub(replace, text or ""))


def slack_subject(text: str) -> str:
    """A ticket subject: the message's first non-empty line, shortened."""
    for line in slack_plain_text(text).splitlines():
        line = " ".join(line.split())
        if line:
            if len(line) > SUBJECT_MAX_CHARS:
                return line[: SUBJECT_MAX_CHARS - 1].rstrip() + "…"
            return line
    return ""


def slack_client_for(*, workspace: SlackWorkspace, **options: Any) -> WebClient:
    """A Web API client for the workspace's bot, at ``settings.SLACK_API_URL``.

    A rotating token is renewed before it expires (and when Slack calls it expired), so
    one client lasts a whole sync. ``options`` go to ``make_rotating_client``.
    """
    return make_rotating_client(
        tokens=WorkspaceTokens(workspace), base_url=settings.SLACK_API_URL, **options
    )


def _error_text(exc: BaseException) -> str:
    return str(exc)[:1000] or exc.__class__.__name__
