"""Integration tasks (queue ``sync_tasks``): thin wrappers over the services.

Every task here is idempotent (ledgers with unique natural keys, saved cursors), so
they ack late and a message whose worker died is delivered again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings

from integrations import email_selectors, email_services, slack_selectors, slack_services, sync
from tickets.models import Organization


def _progress(task: Any) -> Any:
    return lambda done, total, message: task.progress(done=done, total=total, message=message)


# ------------------------------------------------------------------------------
# Shared: every source
# ------------------------------------------------------------------------------


@shared_task(
    name="integrations.tasks.sync_organization_data",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def sync_organization_data(
    self: Any, organization_id: int, sources: list[str] | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Sync every source (or the given ones) of one organization."""
    organization = Organization.objects.get(pk=organization_id)
    return sync.organization_sync(
        organization=organization, sources=sources, on_progress=_progress(self)
    )


@shared_task(
    name="integrations.tasks.manual_sync_trigger",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def manual_sync_trigger(
    self: Any, organization_id: int, source: str, **kwargs: Any
) -> dict[str, Any]:
    """Sync one source of one organization now, as a person asked."""
    organization = Organization.objects.get(pk=organization_id)
    return sync.organization_sync(
        organization=organization, sources=[source], on_progress=_progress(self)
    )


# ------------------------------------------------------------------------------
# --- Slack ---
# ------------------------------------------------------------------------------


@shared_task(
    name="integrations.tasks.sync_slack_tickets",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def sync_slack_tickets(
    self: Any, organization_id: int | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Slack history sync of one organization; without one, enqueue one per organization."""
    if organization_id is None:
        enqueued = {
            organization.slug: slack_services.slack_sync_enqueue(organization=organization)
            for organization in slack_selectors.slack_organizations_to_sync()
        }
        pruned = slack_services.slack_events_prune(
            older_than=timedelta(days=settings.ZENITH_TASK_RETENTION_DAYS)
        )
        return {"enqueued": enqueued, "events_pruned": pruned}
    organization = Organization.objects.get(pk=organization_id)
    return slack_services.slack_sync_organization_summary(
        organization=organization, on_progress=_progress(self)
    )


@shared_task(
    name="integrations.tasks.process_slack_event", acks_late=True, reject_on_worker_lost=True
)
def process_slack_event(event_id: str, organization_id: int | None = None, **kwargs: Any) -> str:
    """Apply one recorded Slack event (the event ledger makes a second run a no-op)."""
    return slack_services.slack_event_process(event_id=event_id)


# ------------------------------------------------------------------------------
# --- E-mail ---
# ------------------------------------------------------------------------------


@shared_task(
    name="integrations.tasks.process_email_tickets", acks_late=True, reject_on_worker_lost=True
)
def process_email_tickets(organization_id: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Enqueue one poll per enabled mailbox (of one organization, or of all)."""
    organization = (
        Organization.objects.get(pk=organization_id) if organization_id is not None else None
    )
    return {"enqueued": email_services.mailbox_poll_enqueue_all(organization=organization)}


@shared_task(
    name="integrations.tasks.sync_mailbox_task",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
)
def sync_mailbox_task(
    self: Any, mailbox_id: int, organization_id: int | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Poll one mailbox: each new mail becomes one ticket or follow-up."""
    mailbox = email_selectors.mailbox_get(mailbox_id=mailbox_id, organization_id=organization_id)
    if mailbox is None or not mailbox.enabled:
        return {"mailbox_id": mailbox_id, "skipped": "mailbox is gone or disabled"}
    return email_services.mailbox_poll_summary(mailbox=mailbox, on_progress=_progress(self))
