"""Integration tasks (queue ``sync_tasks``) that span every source, and the providers' tasks.

Celery's autodiscovery imports this module; importing the providers' task modules here
registers their tasks under their stable ``integrations.tasks.*`` names.
"""

from __future__ import annotations

from typing import Any

from integrations import sync
from integrations.email.tasks import (
    check_mailbox_connection,
    process_email_tickets,
    sync_mailbox_task,
)
from integrations.slack.tasks import process_slack_event, sync_slack_tickets
from taskops.base import ZenithTask, zenith_task
from tickets.models import Organization

__all__ = [
    "check_mailbox_connection",
    "manual_sync_trigger",
    "process_email_tickets",
    "process_slack_event",
    "sync_mailbox_task",
    "sync_organization_data",
    "sync_slack_tickets",
]


@zenith_task("integrations.tasks.sync_organization_data", bind=True)
def sync_organization_data(
    self: ZenithTask, organization_id: int, sources: list[str] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Sync every source (or the given ones) of one organization."""
    organization = Organization.objects.get(pk=organization_id)
    return sync.organization_sync(
        organization=organization, sources=sources, on_progress=self.progress_callback()
    )


@zenith_task("integrations.tasks.manual_sync_trigger", bind=True)
def manual_sync_trigger(
    self: ZenithTask, organization_id: int, source: str, **kwargs: Any
) -> dict[str, Any]:
    """Sync one source of one organization now, as a person asked."""
    organization = Organization.objects.get(pk=organization_id)
    return sync.organization_sync(
        organization=organization, sources=[source], on_progress=self.progress_callback()
    )
