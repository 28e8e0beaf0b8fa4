"""Reads across both providers (mailboxes and Slack workspaces) for the apps above."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import models
from django.db.models.functions import Coalesce, NullIf

from integrations.models import Mailbox, SlackWorkspace
from tickets.models import Organization

MAILBOX = "mailbox"
SLACK = "slack"
PROVIDERS = (MAILBOX, SLACK)


@dataclass(frozen=True)
class _ErrorSource:
    """How one provider's integrations record their errors and their last success."""

    kind: str
    model: type[models.Model]
    last_success: str  # the field each success sets (and whose error it clears)
    label: models.Expression | models.F
    error_kind: models.Expression | models.F
    order_by: str
    # Which rows count: enabled ones, and those Slack disabled (an uninstall is an error).
    watched: models.Q


_SOURCES = {
    MAILBOX: _ErrorSource(
        kind="mailbox",
        model=Mailbox,
        last_success="last_success_at",
        label=models.F("name"),
        error_kind=models.F("last_error_kind"),
        order_by="name",
        watched=models.Q(enabled=True),
    ),
    SLACK: _ErrorSource(
        kind="slack_workspace",
        model=SlackWorkspace,
        last_success="last_sync_at",
        label=Coalesce(NullIf("name", models.Value("")), "team_id"),
        error_kind=models.Value(""),
        order_by="team_id",
        watched=models.Q(enabled=True) | ~models.Q(disabled_reason=""),
    ),
}


def integrations_in_error_list(
    *, organization: Organization, since: datetime, providers: Collection[str] = PROVIDERS
) -> list[dict[str, Any]]:
    """Enabled mailboxes and Slack workspaces whose error has lasted since before `since`.

    A workspace that Slack disabled (app uninstalled, tokens revoked) counts too.

    An integration's error began after its last success (a mailbox's `last_success_at`, a
    workspace's `last_sync_at`; creation when it never succeeded): each success clears
    the error, so "in error since at least then". Syncs run every 5 to 10 minutes, so
    that is at most one sync interval early. Mailboxes first, then workspaces.
    """
    unknown = set(providers) - set(_SOURCES)
    if unknown:
        raise ValueError(f"unknown integration providers {sorted(unknown)}")
    found: list[dict[str, Any]] = []
    for provider in PROVIDERS:
        if provider in providers:
            found += _in_error(_SOURCES[provider], organization=organization, since=since)
    return found


def _in_error(
    source: _ErrorSource, *, organization: Organization, since: datetime
) -> list[dict[str, Any]]:
    # values(): credentials are never loaded (one that no key decrypts would raise).
    rows = (
        source.model._default_manager.filter(source.watched, organization=organization)
        .exclude(last_error="")
        .annotate(
            error_since=Coalesce(source.last_success, "created_at"),
            label=source.label,
            error_kind=source.error_kind,
        )
        .filter(error_since__lte=since)
        .order_by(source.order_by)
        .values("id", "label", "last_error", "error_kind", "error_since")
    )
    return [
        {
            "kind": source.kind,
            "id": row["id"],
            "name": row["label"],
            "error": row["last_error"],
            "error_kind": row["error_kind"],
            "since": row["error_since"].isoformat(),
        }
        for row in rows
    ]
