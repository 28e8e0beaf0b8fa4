"""Slack ingestion: configuration, Events API deliveries and history sync.

Both ways in end in ``slack_messages_ingest``, which writes the ledger row
(unique on team, channel and ts) and the ticket or follow-up in one transaction, so a
message that arrives by event and by sync, or twice by either, becomes one ticket.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from slack_sdk import WebClient

from integrations.clients.slack import (
    SlackAuthError,
    SlackClientError,
    SlackTransientError,
    auth_identity,
    classify_message,
    iter_history,
    iter_replies,
    make_client,
    user_info,
)
from integrations.models import (
    SlackChannel,
    SlackEvent,
    SlackEventStatus,
    SlackMessage,
    SlackMessageKind,
    SlackUserProfile,
    SlackWorkspace,
)
from integrations.transactions import atomic_async_commit
from taskops.base import TransientError
from taskops.services import task_enqueue
from tickets.models import Organization, Source, TicketMessage
from tickets.services import ticket_create_many, ticket_message_create, ticket_update

logger = structlog.get_logger(__name__)

PROCESS_EVENT_TASK = "integrations.tasks.process_slack_event"
SYNC_TASK = "integrations.tasks.sync_slack_tickets"
SUBJECT_MAX_CHARS = 120
USER_CACHE_TTL = timedelta(hours=24)
# A retried delivery whose first enqueue apparently got lost (still pending this long)
# is enqueued again; processing is guarded by the event's state, so this is safe.
REENQUEUE_PENDING_AFTER = timedelta(seconds=30)
# Namespace of the PostgreSQL advisory locks that keep two syncs off one channel.
_CHANNEL_LOCK_NAMESPACE = 0x5A5C

ProgressCallback = Callable[[int, int, str], None]


# ------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------


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

    # Slack escapes only &, < and >; the rest of the text is as typed.
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


def slack_client_for(*, workspace: SlackWorkspace) -> WebClient:
    """A Web API client for the workspace's bot, at ``settings.SLACK_API_URL``."""
    return make_client(token=workspace.bot_token, base_url=settings.SLACK_API_URL)


def _error_text(exc: BaseException) -> str:
    return str(exc)[:1000] or exc.__class__.__name__


# ------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------


def slack_workspace_create(
    *,
    organization: Organization,
    team_id: str,
    bot_token: str,
    name: str = "",
    enabled: bool = True,
) -> SlackWorkspace:
    """Connect a workspace to an organization; the token is stored encrypted."""
    return SlackWorkspace.objects.create(
        organization=organization,
        team_id=team_id,
        name=name,
        bot_token=bot_token,
        enabled=enabled,
    )


def slack_workspace_update(*, workspace: SlackWorkspace, data: Mapping[str, Any]) -> SlackWorkspace:
    """Change name, enabled or the bot token; a new token clears the recorded auth error."""
    fields = []
    for name in ("name", "enabled", "bot_token"):
        if name in data:
            setattr(workspace, name, data[name])
            fields.append(name)
    if "bot_token" in data:
        # The old bot identity and error belong to the old token.
        workspace.bot_user_id = workspace.bot_id = workspace.last_error = ""
        workspace.last_error_at = None
        fields += ["bot_user_id", "bot_id", "last_error", "last_error_at"]
    if fields:
        workspace.save(update_fields=[*fields, "updated_at"])
    return workspace


def slack_channel_create(
    *, workspace: SlackWorkspace, channel_id: str, name: str = "", enabled: bool = True
) -> SlackChannel:
    """Watch a channel of the workspace."""
    return SlackChannel.objects.create(
        workspace=workspace, channel_id=channel_id, name=name, enabled=enabled
    )


def slack_channel_update(*, channel: SlackChannel, data: Mapping[str, Any]) -> SlackChannel:
    """Rename, enable or disable a watched channel (its sync position is kept)."""
    fields = [name for name in ("name", "enabled") if name in data]
    for name in fields:
        setattr(channel, name, data[name])
    if fields:
        channel.save(update_fields=[*fields, "updated_at"])
    return channel


def _workspace_record_error(*, workspace: SlackWorkspace, error: str) -> None:
    now = timezone.now()
    SlackWorkspace.objects.filter(pk=workspace.pk).update(
        last_error=error, last_error_at=now, updated_at=now
    )
    workspace.last_error, workspace.last_error_at = error, now


def _channel_record_error(*, channel: SlackChannel, error: str) -> None:
    now = timezone.now()
    SlackChannel.objects.filter(pk=channel.pk).update(
        last_error=error, last_error_at=now, updated_at=now
    )
    channel.last_error, channel.last_error_at = error, now


# ------------------------------------------------------------------------------
# Requesters (users.info, cached in SlackUserProfile)
# ------------------------------------------------------------------------------


_PROFILE_FIELDS = ("name", "real_name", "email", "is_bot", "found", "fetched_at")


class RequesterResolver:
    """Turns Slack user ids into requester text, one ``users.info`` call per user per day.

    With ``strict`` a Slack error propagates (the sync retries later); without it the
    user id stands in, so an event never waits on a profile.
    """

    def __init__(
        self, *, workspace: SlackWorkspace, client: Callable[[], WebClient], strict: bool
    ) -> None:
        self.workspace = workspace
        self._client = client
        self.strict = strict
        self._known: dict[str, str] = {}

    def resolve(self, user_ids: Iterable[str]) -> dict[str, str]:
        wanted = {uid for uid in user_ids if uid}
        missing = wanted - set(self._known)
        if missing:
            fresh_since = timezone.now() - USER_CACHE_TTL
            stored = {
                profile.user_id: profile
                for profile in SlackUserProfile.objects.filter(
                    team_id=self.workspace.team_id, user_id__in=missing
                )
            }
            for uid, profile in stored.items():
                if profile.fetched_at >= fresh_since:
                    self._known[uid] = profile.display
            fetched: list[SlackUserProfile] = []
            try:
                for uid in sorted(missing - set(self._known)):
                    current = self._fetch(uid, stored=stored.get(uid))
                    self._known[uid] = current.display if current is not None else uid
                    if current is not None:
                        fetched.append(current)
            finally:
                # Also when Slack fails half-way: a retry then fetches only the rest.
                self._save(fetched)
        return {uid: self._known.get(uid, uid) for uid in wanted}

    def _fetch(self, user_id: str, *, stored: SlackUserProfile | None) -> SlackUserProfile | None:
        """The profile as Slack has it now (not saved yet); None when the lookup failed.

        A user Slack no longer finds keeps the names ``stored`` knows.
        """
        try:
            user = user_info(client=self._client(), user_id=user_id)
        except SlackClientError:
            if self.strict:
                raise
            logger.warning("slack_user_lookup_failed", user_id=user_id, exc_info=True)
            return None
        profile = SlackUserProfile(
            team_id=self.workspace.team_id,
            user_id=user_id,
            fetched_at=timezone.now(),
            found=user is not None,
        )
        if user is not None:
            profile.name = user.name[:255]
            profile.real_name = user.real_name[:255]
            profile.email = (user.email or "")[:255]
            profile.is_bot = user.is_bot
        elif stored is not None:
            for name in ("name", "real_name", "email", "is_bot"):
                setattr(profile, name, getattr(stored, name))
        return profile

    def _save(self, profiles: list[SlackUserProfile]) -> None:
        """Upsert fetched profiles at once; a user no longer found keeps the names known."""
        if not profiles:
            return
        # A cache: an asynchronous commit is enough (a lost row is fetched again).
        with atomic_async_commit():
            for found, fields in ((True, _PROFILE_FIELDS), (False, ("found", "fetched_at"))):
                rows = [profile for profile in profiles if profile.found is found]
                if rows:
                    SlackUserProfile.objects.bulk_create(
                        rows,
                        update_conflicts=True,
                        unique_fields=["team_id", "user_id"],
                        update_fields=list(fields),
                    )


# ------------------------------------------------------------------------------
# Ingestion: the one place a Slack message becomes a ticket or a follow-up
# ------------------------------------------------------------------------------


@dataclass
class IngestReport:
    """What one ingest call did."""

    seen: int = 0
    tickets: int = 0
    replies: int = 0
    edited: int = 0
    deleted: int = 0
    orphans: int = 0

    def add(self, other: IngestReport) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass
class _Item:
    """A message to write: what it is, its ts and the message dict carrying its content."""

    kind: str  # "ticket" | "reply" | "edit" | "delete"
    ts: str
    message: dict[str, Any]
    thread_ts: str = ""


def _items(messages: Iterable[dict[str, Any]], *, bot_user_id: str | None) -> list[_Item]:
    items: list[_Item] = []
    for message in messages:
        kind = classify_message(message, bot_user_id=bot_user_id)
        if kind in ("ticket", "reply"):
            items.append(
                _Item(kind, message["ts"], message, thread_ts=message.get("thread_ts") or "")
            )
        elif kind == "changed":
            inner = message.get("message") or {}
            if inner.get("ts"):
                items.append(
                    _Item("edit", inner["ts"], inner, thread_ts=inner.get("thread_ts") or "")
                )
        elif kind == "deleted":
            ts = message.get("deleted_ts") or message.get("ts")
            previous = message.get("previous_message") or message
            if ts:
                items.append(
                    _Item("delete", ts, previous, thread_ts=previous.get("thread_ts") or "")
                )
    return items


def _is_reply(item: _Item) -> bool:
    return bool(item.thread_ts) and item.thread_ts != item.ts


def slack_message_user_ids(messages: Iterable[dict[str, Any]]) -> set[str]:
    """User ids whose names the given messages need (authors of new or edited messages)."""
    ids = set()
    for message in messages:
        inner = message.get("message") if message.get("subtype") == "message_changed" else None
        author = (inner or message).get("user")
        if author:
            ids.add(author)
    return ids


def slack_messages_ingest(
    *,
    channel: SlackChannel,
    messages: list[dict[str, Any]],
    requesters: Mapping[str, str],
    via: str,
    bot_user_id: str | None = None,
) -> IngestReport:
    """Write Slack messages (history items or event payloads) as tickets and follow-ups.

    Idempotent: each (team, channel, ts) is written once; a known message is only ever
    edited (newer text, the previous one kept as a revision) or marked deleted. Thread
    parents must come in the same call as, or before, their replies.
    """
    workspace = channel.workspace
    report = IngestReport(seen=len(messages))
    items = _items(messages, bot_user_id=bot_user_id or workspace.bot_user_id or None)
    if not items:
        return report
    keys = {item.ts for item in items} | {item.thread_ts for item in items if _is_reply(item)}
    with transaction.atomic():
        ledger = {
            row.ts: row
            for row in SlackMessage.objects.select_for_update(of=("self",))
            .filter(team_id=workspace.team_id, channel_id=channel.channel_id, ts__in=keys)
            .select_related("ticket", "ticket_message")
            .order_by()
        }
        now = timezone.now()
        fresh: dict[str, _Item] = {}
        for item in items:
            if item.ts in ledger or item.ts in fresh:
                continue
            if item.kind == "delete":
                # Deleted before we saw it: a tombstone keeps a late copy from becoming a ticket.
                ledger[item.ts] = _ledger_tombstone(channel=channel, item=item, now=now)
                report.deleted += 1
            elif item.kind in ("ticket", "reply", "edit"):
                fresh[item.ts] = item
        tickets = [i for i in fresh.values() if not _is_reply(i)]
        replies = sorted((i for i in fresh.values() if _is_reply(i)), key=lambda i: _ts_key(i.ts))
        if tickets:
            report.tickets += _create_tickets(
                channel=channel, items=tickets, requesters=requesters, via=via, ledger=ledger
            )
        for item in replies:
            created = _create_reply(
                channel=channel, item=item, requesters=requesters, via=via, ledger=ledger
            )
            if created is None:
                report.orphans += 1
            elif created:
                report.replies += 1
        for item in items:
            row = ledger.get(item.ts)
            if row is None or item.ts in fresh:
                continue
            if item.kind == "delete":
                report.deleted += _mark_deleted(row=row, now=now)
            elif _edited_ts(item.message) or item.kind == "edit":
                report.edited += _apply_edit(
                    row=row, message=item.message, requesters=requesters, now=now
                )
    return report


def _ledger_row(
    *, channel: SlackChannel, item: _Item, via: str, kind: str, **extra: Any
) -> SlackMessage:
    workspace = channel.workspace
    return SlackMessage(
        organization_id=workspace.organization_id,
        team_id=workspace.team_id,
        channel_id=channel.channel_id,
        ts=item.ts,
        thread_ts=item.thread_ts,
        kind=kind,
        user_id=item.message.get("user") or "",
        text=item.message.get("text") or "",
        edited_ts=_edited_ts(item.message),
        received_via=via,
        **extra,
    )


def _ledger_tombstone(*, channel: SlackChannel, item: _Item, now: datetime) -> SlackMessage:
    kind = SlackMessageKind.REPLY if _is_reply(item) else SlackMessageKind.TICKET
    row = _ledger_row(channel=channel, item=item, via="event", kind=kind, deleted_at=now)
    row, _ = _ledger_get_or_create(row)
    return row


def _ledger_get_or_create(row: SlackMessage) -> tuple[SlackMessage, bool]:
    """Insert a ledger row, or return the one a concurrent writer committed first."""
    try:
        with transaction.atomic():
            row.save(force_insert=True)
        return row, True
    except IntegrityError:
        existing = SlackMessage.objects.select_related("ticket", "ticket_message").get(
            team_id=row.team_id, channel_id=row.channel_id, ts=row.ts
        )
        return existing, False


def _edited_ts(message: Mapping[str, Any]) -> str:
    edited = message.get("edited") or {}
    return str(edited.get("ts") or "")


def _requester(message: Mapping[str, Any], requesters: Mapping[str, str]) -> str:
    user = message.get("user") or ""
    return (requesters.get(user) or user)[:255]


def _create_tickets(
    *,
    channel: SlackChannel,
    items: list[_Item],
    requesters: Mapping[str, str],
    via: str,
    ledger: dict[str, SlackMessage],
) -> int:
    """Tickets and ledger rows for new top-level messages, in bulk; returns how many were new."""
    workspace = channel.workspace
    specs = []
    for item in items:
        text = item.message.get("text") or ""
        requester = _requester(item.message, requesters)
        specs.append(
            {
                "external_id": slack_external_id(
                    team_id=workspace.team_id, channel_id=channel.channel_id, ts=item.ts
                ),
                "subject": slack_subject(text) or f"Slack message from {requester}"[:500],
                "body": slack_plain_text(text),
                "requester": requester,
            }
        )
    created = ticket_create_many(
        organization=workspace.organization, source=Source.SLACK, tickets=specs
    )
    rows = [
        _ledger_row(
            channel=channel,
            item=item,
            via=via,
            kind=SlackMessageKind.TICKET,
            ticket=created[spec["external_id"]][0],
        )
        for item, spec in zip(items, specs, strict=True)
    ]
    try:
        with transaction.atomic():
            SlackMessage.objects.bulk_create(rows)
        for row in rows:
            ledger[row.ts] = row
    except IntegrityError:
        # Someone (an event, another sync) wrote some of these rows meanwhile.
        for row in rows:
            ledger[row.ts], _ = _ledger_get_or_create(row)
    for item, spec in zip(items, specs, strict=True):
        ticket, was_created = created[spec["external_id"]]
        if was_created:
            logger.info(
                "slack_message_ingested",
                organization=workspace.organization_id,
                team_id=workspace.team_id,
                channel_id=channel.channel_id,
                ts=item.ts,
                via=via,
                kind="ticket",
                ticket_id=ticket.pk,
            )
    return sum(1 for ticket, was_created in created.values() if was_created)


def _create_reply(
    *,
    channel: SlackChannel,
    item: _Item,
    requesters: Mapping[str, str],
    via: str,
    ledger: dict[str, SlackMessage],
) -> bool | None:
    """A follow-up on the thread's ticket; None when the thread's ticket is unknown."""
    parent = ledger.get(item.thread_ts)
    if parent is None or parent.ticket is None:
        return None
    workspace = channel.workspace
    message, created = ticket_message_create(
        ticket=parent.ticket,
        source=Source.SLACK,
        external_id=slack_external_id(
            team_id=workspace.team_id, channel_id=channel.channel_id, ts=item.ts
        ),
        author=_requester(item.message, requesters),
        body=slack_plain_text(item.message.get("text") or ""),
    )
    row, _ = _ledger_get_or_create(
        _ledger_row(
            channel=channel,
            item=item,
            via=via,
            kind=SlackMessageKind.REPLY,
            ticket_message=message,
        )
    )
    ledger[item.ts] = row
    if created:
        logger.info(
            "slack_message_ingested",
            organization=workspace.organization_id,
            team_id=workspace.team_id,
            channel_id=channel.channel_id,
            ts=item.ts,
            via=via,
            kind="reply",
            ticket_id=parent.ticket_id,
        )
    if _ts_key(item.ts) > _ts_key(parent.latest_reply_ts):
        parent.latest_reply_ts = item.ts
        SlackMessage.objects.filter(pk=parent.pk).update(latest_reply_ts=item.ts)
    return created


def _apply_edit(
    *,
    row: SlackMessage,
    message: Mapping[str, Any],
    requesters: Mapping[str, str],
    now: datetime,
) -> int:
    """Apply a newer text to a known message, keeping the old one as a revision."""
    text = message.get("text") or ""
    edited_ts = _edited_ts(message)
    if row.deleted_at is not None or text == row.text:
        return 0
    if row.edited_ts and edited_ts and _ts_key(edited_ts) <= _ts_key(row.edited_ts):
        return 0  # an older edit delivered late
    previous = row.text
    row.revisions = [
        *row.revisions,
        {"text": previous, "edited_ts": row.edited_ts or None, "replaced_at": now.isoformat()},
    ]
    row.text = text
    row.edited_ts = edited_ts or row.edited_ts
    row.save(update_fields=["revisions", "text", "edited_ts", "updated_at"])
    edited_at = _ts_datetime(edited_ts) or now
    if row.ticket_message is not None:
        TicketMessage.objects.filter(pk=row.ticket_message.pk).update(
            body=slack_plain_text(text), edited_at=edited_at
        )
    elif row.ticket is not None:
        data = {"body": slack_plain_text(text)}
        # The subject follows the text unless a person has rewritten it.
        if row.ticket.subject == slack_subject(previous):
            data["subject"] = slack_subject(text) or row.ticket.subject
        ticket_update(ticket=row.ticket, data=data, user=None)
    return 1


def _mark_deleted(*, row: SlackMessage, now: datetime) -> int:
    if row.deleted_at is not None:
        return 0
    row.deleted_at = now
    row.save(update_fields=["deleted_at", "updated_at"])
    if row.ticket_message is not None:
        TicketMessage.objects.filter(pk=row.ticket_message.pk, deleted_at__isnull=True).update(
            deleted_at=now
        )
    return 1


# ------------------------------------------------------------------------------
# Events API
# ------------------------------------------------------------------------------

_UNINSTALL_EVENTS = {
    "app_uninstalled": "the app was uninstalled",
    "tokens_revoked": "tokens revoked",
}


def _event_triage(*, workspace: SlackWorkspace | None, event: Mapping[str, Any]) -> tuple[str, str]:
    """(status, note) of a fresh delivery: pending work, or ignored and why."""
    if workspace is None:
        return SlackEventStatus.IGNORED, "unknown workspace"
    event_type = event.get("type") or ""
    if event_type in _UNINSTALL_EVENTS:
        return SlackEventStatus.PENDING, ""
    if not workspace.enabled:
        return SlackEventStatus.IGNORED, "workspace disabled"
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
    event_id = str(payload.get("event_id") or "")
    event = payload.get("event")
    if payload.get("type") != "event_callback" or not event_id or not isinstance(event, dict):
        return None, False
    team_id = str(payload.get("team_id") or event.get("team") or "")
    workspace = SlackWorkspace.objects.filter(team_id=team_id).first()
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
        _workspace_record_error(workspace=workspace, error=_UNINSTALL_EVENTS[event["type"]])
        return _event_finish(row=row, status=SlackEventStatus.PROCESSED, note="recorded")
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


# ------------------------------------------------------------------------------
# History sync
# ------------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What a sync of one organization did; JSON-serialisable through ``as_dict``."""

    workspaces: int = 0
    channels: int = 0
    pages: int = 0
    messages: IngestReport = field(default_factory=IngestReport)
    errors: list[dict[str, str]] = field(default_factory=list)
    transient: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspaces": self.workspaces,
            "channels": self.channels,
            "pages": self.pages,
            **asdict(self.messages),
            "errors": self.errors,
        }


@contextmanager
def _channel_lock(channel: SlackChannel) -> Iterator[bool]:
    """Keep two syncs off one channel (PostgreSQL advisory lock; freed if the process dies)."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_CHANNEL_LOCK_NAMESPACE, channel.pk])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", [_CHANNEL_LOCK_NAMESPACE, channel.pk]
                )


def _overlap_oldest(latest_ts: str) -> str | None:
    if not latest_ts:
        return None
    oldest = _ts_key(latest_ts) - settings.SLACK_SYNC_OVERLAP_SECONDS
    return f"{max(oldest, Decimal(0)):.6f}"


def _thread_replies(
    *, channel: SlackChannel, client: WebClient, messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """New replies of the threads on a history page (parents whose latest reply is newer)."""
    parents = {
        m["ts"]: m
        for m in messages
        if m.get("reply_count") and m.get("thread_ts", m.get("ts")) == m.get("ts")
    }
    if not parents:
        return []
    known = dict(
        SlackMessage.objects.filter(
            team_id=channel.workspace.team_id, channel_id=channel.channel_id, ts__in=list(parents)
        ).values_list("ts", "latest_reply_ts")
    )
    replies: list[dict[str, Any]] = []
    for ts, parent in parents.items():
        seen_up_to = known.get(ts) or ""
        if seen_up_to and _ts_key(parent.get("latest_reply")) <= _ts_key(seen_up_to):
            continue
        for reply in iter_replies(
            client=client, channel=channel.channel_id, thread_ts=ts, oldest=seen_up_to or None
        ):
            if reply.get("ts") != ts:
                replies.append(reply)
    return replies


def slack_channel_sync(
    *,
    channel: SlackChannel,
    client: WebClient,
    resolver: RequesterResolver,
    report: SyncReport,
    on_page: Callable[[int, int], None] | None = None,
) -> bool:
    """Page a channel's history from its saved cursor; each page commits with its cursor.

    Returns False when another sync holds the channel. Slack errors propagate.
    """
    page_size = settings.SLACK_HISTORY_PAGE_SIZE
    with _channel_lock(channel) as acquired:
        if not acquired:
            return False
        channel.refresh_from_db()
        if channel.sync_cursor:
            oldest, cursor = channel.pass_oldest or None, channel.sync_cursor
            pass_newest = channel.pass_newest
        else:
            oldest, cursor, pass_newest = _overlap_oldest(channel.latest_ts), None, ""
        done = 0
        for page in iter_history(
            client=client,
            channel=channel.channel_id,
            oldest=oldest,
            cursor=cursor,
            page_size=page_size,
        ):
            messages = [
                *page.messages,
                *_thread_replies(channel=channel, client=client, messages=page.messages),
            ]
            requesters = resolver.resolve(slack_message_user_ids(messages))
            pass_newest = _ts_max(pass_newest, *(m.get("ts") for m in page.messages))
            # Lost in a database crash, the page goes with its cursor and is read again.
            with atomic_async_commit():
                report.messages.add(
                    slack_messages_ingest(
                        channel=channel, messages=messages, requesters=requesters, via="sync"
                    )
                )
                now = timezone.now()
                changes: dict[str, Any]
                if page.next_cursor:
                    changes = {
                        "sync_cursor": page.next_cursor,
                        "pass_oldest": oldest or "",
                        "pass_newest": pass_newest,
                    }
                else:
                    changes = {
                        "sync_cursor": "",
                        "pass_oldest": "",
                        "pass_newest": "",
                        "latest_ts": _ts_max(channel.latest_ts, pass_newest),
                        "last_sync_at": now,
                        "last_error": "",
                        "last_error_at": None,
                    }
                SlackChannel.objects.filter(pk=channel.pk).update(**changes, updated_at=now)
                for name, value in changes.items():
                    setattr(channel, name, value)
            report.pages += 1
            done += len(page.messages)
            if on_page is not None:
                on_page(report.pages, done)
    return True


def slack_workspace_sync(
    *,
    workspace: SlackWorkspace,
    report: SyncReport,
    on_progress: ProgressCallback | None = None,
    progress_base: int = 0,
    progress_total: int = 0,
) -> None:
    """Sync every enabled channel of a workspace; a dead token is recorded and ends it."""
    client = slack_client_for(workspace=workspace)
    report.workspaces += 1
    try:
        identity = auth_identity(client=client)
    except SlackAuthError as exc:
        _workspace_failed(workspace=workspace, report=report, exc=exc)
        return
    except SlackClientError as exc:
        _workspace_failed(workspace=workspace, report=report, exc=exc)
        return
    if identity.team_id != workspace.team_id:
        error = f"the bot token belongs to team {identity.team_id}, not {workspace.team_id}"
        _workspace_record_error(workspace=workspace, error=error)
        report.errors.append({"workspace": workspace.team_id, "error": error})
        return
    if (identity.user_id or "", identity.bot_id or "") != (workspace.bot_user_id, workspace.bot_id):
        workspace.bot_user_id, workspace.bot_id = identity.user_id or "", identity.bot_id or ""
        SlackWorkspace.objects.filter(pk=workspace.pk).update(
            bot_user_id=workspace.bot_user_id, bot_id=workspace.bot_id
        )
    resolver = RequesterResolver(workspace=workspace, client=lambda: client, strict=True)
    channels = list(workspace.channels.filter(enabled=True).order_by("pk"))
    for index, channel in enumerate(channels):
        channel.workspace = workspace
        label = f"{workspace.team_id}/#{channel.name or channel.channel_id}"

        def on_page(pages: int, done: int, label: str = label, index: int = index) -> None:
            if on_progress is not None:
                on_progress(
                    progress_base + index,
                    progress_total,
                    f"{label}: {done} messages ({pages} pages in this sync)",
                )

        try:
            synced = slack_channel_sync(
                channel=channel, client=client, resolver=resolver, report=report, on_page=on_page
            )
        except SlackAuthError as exc:
            _workspace_failed(workspace=workspace, report=report, exc=exc)
            return
        except SlackClientError as exc:
            _channel_record_error(channel=channel, error=_error_text(exc))
            report.errors.append({"channel": label, "error": _error_text(exc)})
            report.transient = report.transient or isinstance(exc, SlackTransientError)
            continue
        if synced:
            report.channels += 1
        elif on_progress is not None:
            on_progress(progress_base + index + 1, progress_total, f"{label}: busy, skipped")
    now = timezone.now()
    SlackWorkspace.objects.filter(pk=workspace.pk).update(
        last_sync_at=now, last_error="", last_error_at=None, updated_at=now
    )


def _workspace_failed(
    *, workspace: SlackWorkspace, report: SyncReport, exc: SlackClientError
) -> None:
    error = _error_text(exc)
    logger.warning(
        "slack_workspace_failed",
        organization=workspace.organization_id,
        team_id=workspace.team_id,
        error=error,
    )
    _workspace_record_error(workspace=workspace, error=error)
    report.errors.append({"workspace": workspace.team_id, "error": error})
    report.transient = report.transient or isinstance(exc, SlackTransientError)


def slack_sync_organization(
    *, organization: Organization, on_progress: ProgressCallback | None = None
) -> SyncReport:
    """History sync of every enabled workspace and channel of an organization.

    A revoked token is recorded on its workspace and the others go on; progress is
    reported as (channels done, channels in total, message).
    """
    report = SyncReport()
    workspaces = list(
        SlackWorkspace.objects.filter(organization=organization, enabled=True)
        .select_related("organization")
        .order_by("pk")
    )
    counts = {ws.pk: ws.channels.filter(enabled=True).count() for ws in workspaces}
    total, base = sum(counts.values()), 0
    for workspace in workspaces:
        slack_workspace_sync(
            workspace=workspace,
            report=report,
            on_progress=on_progress,
            progress_base=base,
            progress_total=total,
        )
        base += counts[workspace.pk]
        if on_progress is not None:
            on_progress(base, total, f"{workspace.team_id}: done")
    return report


def slack_sync_organization_summary(
    *, organization: Organization, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """``slack_sync_organization`` as a JSON summary; raises TransientError to retry later.

    The retry resumes at the saved cursors, so work already committed is not repeated.
    """
    report = slack_sync_organization(organization=organization, on_progress=on_progress)
    if report.transient:
        raise TransientError(
            f"Slack sync of {organization.slug} hit transient errors: {report.errors}"
        )
    return report.as_dict()


def slack_sync_enqueue(*, organization: Organization, triggered_by: str = "system") -> str:
    """Enqueue a history sync of the organization (after commit); returns the task id."""
    return task_enqueue(
        name=SYNC_TASK, kwargs={"organization_id": organization.pk}, triggered_by=triggered_by
    )
