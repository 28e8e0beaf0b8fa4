"""Slack tasks (queue ``sync_tasks``): thin wrappers over integrations.slack.services.

Both are idempotent (the message and event ledgers have unique natural keys, the sync keeps
its cursor), so a message whose worker died is delivered again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings

from integrations.slack import selectors, services
from taskops.base import ZenithTask, zenith_task
from tickets.models import Organization


@zenith_task("integrations.tasks.sync_slack_tickets", bind=True)
def sync_slack_tickets(
    self: ZenithTask, organization_id: int | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Slack history sync of one organization; without one, enqueue one per organization."""
    if organization_id is None:
        enqueued = {
            organization.slug: services.slack_sync_enqueue(organization=organization)
            for organization in selectors.slack_organizations_to_sync()
        }
        pruned = services.slack_events_prune(
            older_than=timedelta(days=settings.ZENITH_TASK_RETENTION_DAYS)
        )
        return {"enqueued": enqueued, "events_pruned": pruned}
    organization = Organization.objects.get(pk=organization_id)
    return services.slack_sync_organization_summary(
        organization=organization, on_progress=self.progress_callback()
    )


@zenith_task("integrations.tasks.process_slack_event")
def process_slack_event(event_id: str, organization_id: int | None = None, **kwargs: Any) -> str:
    """Apply one recorded Slack event (the event ledger makes a second run a no-op)."""
    return services.slack_event_process(event_id=event_id)
