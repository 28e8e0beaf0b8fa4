"""E-mail tasks (queue ``sync_tasks``): thin wrappers over integrations.email.services.

Both are idempotent (the inbound ledger is unique on mailbox, UIDVALIDITY and UID, and the
cursor is that ledger), so a message whose worker died is delivered again.
"""

from __future__ import annotations

from typing import Any

from integrations.email import selectors, services
from taskops.base import ZenithTask, zenith_task
from tickets.models import Organization


@zenith_task("integrations.tasks.process_email_tickets")
def process_email_tickets(organization_id: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Enqueue one poll per enabled mailbox (of one organization, or of all)."""
    organization = (
        Organization.objects.get(pk=organization_id) if organization_id is not None else None
    )
    return {"enqueued": services.mailbox_poll_enqueue_all(organization=organization)}


@zenith_task("integrations.tasks.sync_mailbox_task", bind=True)
def sync_mailbox_task(
    self: ZenithTask, mailbox_id: int, organization_id: int | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Poll one mailbox: each new mail becomes one ticket or follow-up."""
    mailbox = selectors.mailbox_get(mailbox_id=mailbox_id, organization_id=organization_id)
    if mailbox is None or not mailbox.enabled:
        return {"mailbox_id": mailbox_id, "skipped": "mailbox is gone or disabled"}
    return services.mailbox_poll_summary(mailbox=mailbox, on_progress=self.progress_callback())


@zenith_task("integrations.tasks.test_mailbox_connection")
def check_mailbox_connection(
    mailbox_id: int, organization_id: int | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Log in to a mailbox and look at its folders (never in a web process)."""
    mailbox = selectors.mailbox_get(mailbox_id=mailbox_id, organization_id=organization_id)
    if mailbox is None:
        return {"mailbox_id": mailbox_id, "ok": False, "error_kind": "missing", "error": "gone"}
    return services.mailbox_test_connection_summary(mailbox=mailbox)
