"""History sync: channels and workspaces paged through conversations.history."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from django.conf import settings
from django.db import connection
from django.utils import timezone
from slack_sdk import WebClient

from integrations.models import (
    SlackChannel,
    SlackMessage,
    SlackWorkspace,
)
from integrations.slack.client import (
    SlackAuthError,
    SlackClientError,
    SlackTransientError,
    auth_identity,
    iter_history,
    iter_replies,
)
from integrations.slack.services.ingest import (
    IngestReport,
    slack_message_malformed,
    slack_message_user_ids,
    slack_messages_ingest,
)
from integrations.slack.services.requesters import RequesterResolver
from integrations.slack.services.text import _error_text, _ts_key, _ts_max, slack_client_for
from integrations.slack.services.workspaces import (
    _channel_record_error,
    _workspace_record_error,
    slack_workspace_record_verified,
)
from integrations.transactions import atomic_async_commit
from taskops.base import TransientError
from taskops.progress import ProgressCallback
from taskops.services import task_enqueue
from tickets.models import Organization

logger = structlog.get_logger(__name__)
SYNC_TASK = "integrations.tasks.sync_slack_tickets"
# Namespace of the PostgreSQL advisory locks that keep two syncs off one channel.
_CHANNEL_LOCK_NAMESPACE = 0x5A5C


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
            # The next page is on its way while this one is written (the cursor below still
            # moves only in the page's own commit).
            prefetch=True,
        ):
            # A malformed message is skipped (and logged) by the ingest; the rest still counts.
            sound = [m for m in page.messages if slack_message_malformed(m) is None]
            messages = [
                *page.messages,
                *_thread_replies(channel=channel, client=client, messages=sound),
            ]
            requesters = resolver.resolve(slack_message_user_ids(messages))
            pass_newest = _ts_max(pass_newest, *(m["ts"] for m in sound))
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
    # The same proof as on connect: a workspace connected before tokens were verified
    # gets its verification (and its events) here, unless another one already holds it.
    if not slack_workspace_record_verified(workspace=workspace, identity=identity):
        error = f"team {workspace.team_id} is connected to another organization"
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
