"""Events API: deliveries recorded, then processed by a task."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import structlog
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from slack_sdk import WebClient

from integrations.models import (
    SlackChannel,
    SlackEvent,
    SlackEventStatus,
    SlackMessage,
    SlackWorkspace,
)
from integrations.slack.client import (
    SlackAuthError,
    SlackClientError,
    SlackTransientError,
    classify_message,
    iter_replies,
)
from integrations.slack.services.ingest import (
    slack_message_malformed,
    slack_message_user_ids,
    slack_messages_ingest,
)
from integrations.slack.services.install import slack_workspace_disable
from integrations.slack.services.requesters import RequesterResolver
from integrations.slack.services.text import _error_text, slack_client_for
from integrations.slack.services.workspaces import _workspace_record_error
from taskops.base import TransientError
from taskops.services import task_enqueue
from tickets.text import storable_json

logger = structlog.get_logger(__name__)
PROCESS_EVENT_TASK = "integrations.tasks.process_slack_event"
# A retried delivery whose first enqueue apparently got lost (still pending this long)
# is enqueued again; processing is guarded by the event's state, so this is safe.
REENQUEUE_PENDING_AFTER = timedelta(seconds=30)


_UNINSTALL_EVENTS = {
    "app_uninstalled": "the app was uninstalled",
    "tokens_revoked": "tokens revoked",
}


def slack_workspace_for_team(*, team_id: str) -> SlackWorkspace | None:
    """The workspace whose bot token was proven (``auth.test``) to be of ``team_id``.

    Events name only their team: routing by the typed ``team_id`` would hand them to
    whoever typed it first. Unproven workspaces get no events.
    """
    if not team_id:
        return None
    return (
        SlackWorkspace.objects.select_related("organization")
        .filter(verified_team_id=team_id, team_id=team_id)
        .first()
    )


def _event_triage(*, workspace: SlackWorkspace | None, event: Mapping[str, Any]) -> tuple[str, str]:
    """(status, note) of a fresh delivery: pending work, or ignored and why."""
    if workspace is None:
        return SlackEventStatus.IGNORED, "unknown workspace"
    event_type = event.get("type") or ""
    if event_type in _UNINSTALL_EVENTS:
        return SlackEventStatus.PENDING, ""
    if not workspace.enabled:
        return SlackEventStatus.IGNORED, "workspace disabled"
    if event_type in ("message", "app_mention") and (problem := slack_message_malformed(event)):
        return SlackEventStatus.IGNORED, f"malformed message: {problem}"
    kind = classify_message(dict(event), bot_user_id=workspace.bot_user_id or None)
    if kind == "ignore":
        return SlackEventStatus.IGNORED, "not a person's message"
    watched = SlackChannel.objects.filter(
        workspace=workspace, channel_id=event.get("channel") or "", enabled=True
    ).exists()
    if not watched:
        return SlackEventStatus.IGNORED, "channel not watched"
    return SlackEventStatus.PENDING, ""


def slack_event_receive(
    *, payload: Mapping[str, Any], retry_num: int | None = None
) -> tuple[SlackEvent | None, bool]:
    """Record a verified Events API callback once and enqueue its processing after commit.

    Returns (event row, whether this delivery was the first). A redelivery (Slack's
    retries, ``X-Slack-Retry-Num``) only counts itself on the existing row.
    """
    # Slack's JSON may carry "\u0000" and lone surrogates, which PostgreSQL refuses.
    payload = storable_json(dict(payload))
    event_id = str(payload.get("event_id") or "")
    event = payload.get("event")
    if payload.get("type") != "event_callback" or not event_id or not isinstance(event, dict):
        return None, False
    team_id = str(payload.get("team_id") or event.get("team") or "")
    workspace = slack_workspace_for_team(team_id=team_id)
    status, note = _event_triage(workspace=workspace, event=event)
    with transaction.atomic():
        row, created = SlackEvent.objects.get_or_create(
            event_id=event_id,
            defaults={
                "team_id": team_id[:32],
                "workspace": workspace,
                "event_type": str(event.get("type") or "")[:64],
                "subtype": str(event.get("subtype") or "")[:64],
                "channel_id": str(event.get("channel") or "")[:32],
                "payload": event,
                "status": status,
                "note": note,
            },
        )
        if created:
            if status == SlackEventStatus.PENDING and workspace is not None:
                _enqueue_event(row=row, workspace=workspace)
            return row, True
        SlackEvent.objects.filter(pk=row.pk).update(deliveries=F("deliveries") + 1)
        stale = row.received_at < timezone.now() - REENQUEUE_PENDING_AFTER
        if row.status == SlackEventStatus.PENDING and stale and row.workspace is not None:
            logger.warning("slack_event_enqueued_again", event_id=event_id, retry_num=retry_num)
            _enqueue_event(row=row, workspace=row.workspace)
    return row, False


def _enqueue_event(*, row: SlackEvent, workspace: SlackWorkspace) -> None:
    task_enqueue(
        name=PROCESS_EVENT_TASK,
        kwargs={"organization_id": workspace.organization_id, "event_id": row.event_id},
        triggered_by="slack:event",
    )


def slack_event_process(*, event_id: str) -> str:
    """Apply a recorded event (message, reply, edit, deletion, uninstall); returns its status.

    Runs once per event: the state guard makes a redelivered task a no-op.
    """
    row = (
        SlackEvent.objects.select_related("workspace__organization")
        .filter(event_id=event_id)
        .first()
    )
    if row is None or row.status != SlackEventStatus.PENDING or row.workspace is None:
        return row.status if row is not None else "missing"
    workspace, event = row.workspace, dict(row.payload)
    if event.get("type") in _UNINSTALL_EVENTS:
        if event["type"] == "tokens_revoked" and not (event.get("tokens") or {}).get("bot"):
            # Only user tokens were revoked; the bot token ingestion uses still works.
            return _event_finish(row=row, status=SlackEventStatus.IGNORED, note="no bot token")
        reason = f"Slack: {_UNINSTALL_EVENTS[event['type']]}; reinstall with Add to Slack"
        slack_workspace_disable(workspace=workspace, reason=reason)
        return _event_finish(row=row, status=SlackEventStatus.PROCESSED, note="workspace disabled")
    channel = (
        SlackChannel.objects.select_related("workspace__organization")
        .filter(workspace=workspace, channel_id=row.channel_id, enabled=True)
        .first()
    )
    if channel is None or not workspace.enabled:
        return _event_finish(row=row, status=SlackEventStatus.IGNORED, note="channel not watched")
    client_cache: list[WebClient] = []

    def client() -> WebClient:
        if not client_cache:
            client_cache.append(slack_client_for(workspace=workspace))
        return client_cache[0]

    messages = [event]
    try:
        parent = _missing_thread_parent(channel=channel, event=event, client=client)
    except SlackAuthError as exc:
        _workspace_record_error(workspace=workspace, error=_error_text(exc))
        return _event_finish(row=row, status=SlackEventStatus.IGNORED, note=f"thread: {exc.error}")
    except SlackTransientError as exc:
        raise TransientError(str(exc)) from exc
    except SlackClientError as exc:
        return _event_finish(row=row, status=SlackEventStatus.IGNORED, note=f"thread: {exc.error}")
    if parent is not None:
        messages.insert(0, parent)
    resolver = RequesterResolver(workspace=workspace, client=client, strict=False)
    requesters = resolver.resolve(slack_message_user_ids(messages))
    with transaction.atomic():
        locked = SlackEvent.objects.select_for_update().get(pk=row.pk)
        if locked.status != SlackEventStatus.PENDING:
            return locked.status
        report = slack_messages_ingest(
            channel=channel, messages=messages, requesters=requesters, via="event"
        )
        note = ", ".join(f"{k}={v}" for k, v in asdict(report).items() if v and k != "seen")
        return _event_finish(row=locked, status=SlackEventStatus.PROCESSED, note=note)


def _event_finish(*, row: SlackEvent, status: str, note: str) -> str:
    SlackEvent.objects.filter(pk=row.pk, status=SlackEventStatus.PENDING).update(
        status=status, note=note[:255], processed_at=timezone.now()
    )
    return status


def _missing_thread_parent(
    *, channel: SlackChannel, event: Mapping[str, Any], client: Callable[[], WebClient]
) -> dict[str, Any] | None:
    """The thread parent of a reply we have no ticket for yet, fetched from Slack."""
    message = event.get("message") if event.get("subtype") == "message_changed" else event
    if not isinstance(message, Mapping):
        return None
    thread_ts, ts = message.get("thread_ts"), message.get("ts")
    if not thread_ts or thread_ts == ts or event.get("subtype") == "message_deleted":
        return None
    known = SlackMessage.objects.filter(
        team_id=channel.workspace.team_id,
        channel_id=channel.channel_id,
        ts=thread_ts,
        ticket__isnull=False,
    ).exists()
    if known:
        return None
    for first in iter_replies(
        client=client(), channel=channel.channel_id, thread_ts=str(thread_ts), page_size=1
    ):
        return first if first.get("ts") == thread_ts else None
    return None


def slack_events_prune(*, older_than: timedelta) -> int:
    """Delete finished event-ledger rows older than ``older_than`` (Slack retries for ~1 h)."""
    cutoff = timezone.now() - older_than
    deleted, _ = (
        SlackEvent.objects.filter(received_at__lt=cutoff)
        .exclude(status=SlackEventStatus.PENDING)
        .delete()
    )
    return deleted
