"""Ingestion: the one place a Slack message becomes a ticket or a follow-up."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.models import (
    SlackChannel,
    SlackMessage,
    SlackMessageKind,
)
from integrations.slack.client import (
    DELETED_SUBTYPES,
    classify_message,
)
from integrations.slack.services.text import (
    _ts_datetime,
    _ts_key,
    slack_external_id,
    slack_plain_text,
    slack_subject,
)
from tickets.models import Source, TicketMessage
from tickets.services import ticket_create_many, ticket_message_create, ticket_update
from tickets.text import storable_text

logger = structlog.get_logger(__name__)


@dataclass
class IngestReport:
    """What one ingest call did."""

    seen: int = 0
    tickets: int = 0
    replies: int = 0
    edited: int = 0
    deleted: int = 0
    orphans: int = 0
    rejected: int = 0

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


# A Slack ts: seconds and microseconds ("1712345678.000100"); anything else is not Slack's.
_TS = re.compile(r"\d{1,12}\.\d{1,9}")
_TEXT_FIELDS = ("text", "user", "subtype", "type")


def _bad_ts(value: Any, *, required: bool) -> bool:
    if value is None or value == "":
        return required
    return not (isinstance(value, str) and _TS.fullmatch(value))


def _bad_content(message: Any) -> str | None:
    if not isinstance(message, dict):
        return "not an object"
    if _bad_ts(message.get("ts"), required=True):
        return "ts missing or malformed"
    if _bad_ts(message.get("thread_ts"), required=False):
        return "thread_ts malformed"
    wrong = [name for name in _TEXT_FIELDS if not isinstance(message.get(name, ""), str)]
    if wrong:
        return f"{', '.join(wrong)} not text"
    return None


def slack_message_malformed(message: Any) -> str | None:
    """Why a message (history item or event) cannot be ingested, or None if it can.

    Slack's own messages always pass; a broken one (a proxy's, a bug's, a forged event's)
    is skipped with its reason, so the rest of its page still becomes tickets.
    """
    if not isinstance(message, dict):
        return "not an object"
    subtype = message.get("subtype")
    if subtype in DELETED_SUBTYPES:
        if _bad_ts(message.get("deleted_ts") or message.get("ts"), required=True):
            return "deleted_ts missing or malformed"
        return None
    if subtype == "message_changed":
        inner = message.get("message")
        problem = _bad_content(inner) if inner is not None else "no message"
        return None if problem is None else f"edited message: {problem}"
    return _bad_content(message)


def _storable(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its text fields storable: Slack's JSON may carry NUL characters
    and lone surrogates, which PostgreSQL refuses (tickets.text.storable_text)."""
    cleaned = {
        name: storable_text(message[name])
        for name in _TEXT_FIELDS
        if isinstance(message.get(name), str)
    }
    return {**message, **cleaned}


def _items(messages: Iterable[dict[str, Any]], *, bot_user_id: str | None) -> list[_Item]:
    items: list[_Item] = []
    for message in messages:
        kind = classify_message(message, bot_user_id=bot_user_id)
        if kind in ("ticket", "reply"):
            message = _storable(message)
            items.append(
                _Item(kind, message["ts"], message, thread_ts=message.get("thread_ts") or "")
            )
        elif kind == "changed":
            inner = _storable(message.get("message") or {})
            if inner.get("ts"):
                items.append(
                    _Item("edit", inner["ts"], inner, thread_ts=inner.get("thread_ts") or "")
                )
        elif kind == "deleted":
            ts = message.get("deleted_ts") or message.get("ts")
            previous = _storable(message.get("previous_message") or message)
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
        if slack_message_malformed(message) is not None:
            continue  # the ingest rejects it: no name to look up
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
    screened = []
    for message in messages:
        problem = slack_message_malformed(message)
        if problem is None:
            screened.append(message)
            continue
        report.rejected += 1
        ts = message.get("ts") if isinstance(message, dict) else None
        logger.warning(
            "slack_message_rejected",
            team_id=workspace.team_id,
            channel_id=channel.channel_id,
            ts=str(ts)[:40] if ts is not None else None,
            reason=problem,
            via=via,
        )
    items = _items(screened, bot_user_id=bot_user_id or workspace.bot_user_id or None)
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
    new = [
        (item.ts, created[spec["external_id"]][0].pk)
        for item, spec in zip(items, specs, strict=True)
        if created[spec["external_id"]][1]
    ]
    if new:
        # One line per page, not per message: at sync rates a line per message cost more
        # than writing the rows. ``ticket_ids`` still lets a log filter find each ticket.
        logger.info(
            "slack_messages_ingested",
            organization=workspace.organization_id,
            team_id=workspace.team_id,
            channel_id=channel.channel_id,
            via=via,
            kind="ticket",
            count=len(new),
            first_ts=new[0][0],
            last_ts=new[-1][0],
            ticket_ids=[ticket_id for _, ticket_id in new],
        )
    return len(new)


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
