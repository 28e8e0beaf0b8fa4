"""Organization-wide syncs and the tasks that run them."""

from __future__ import annotations

from typing import Any

import structlog

from integrations.email import selectors as email_selectors
from integrations.email.services.poll import MailboxSyncReport, mailbox_poll
from integrations.models import (
    InboundEmailState,
    Mailbox,
)
from taskops.base import TransientError
from taskops.progress import ProgressCallback
from taskops.services import task_enqueue
from tickets.models import Organization

logger = structlog.get_logger(__name__)
SYNC_MAILBOX_TASK = "integrations.tasks.sync_mailbox_task"
MANUAL_SYNC_TASK = "integrations.tasks.manual_sync_trigger"


def email_sync_organization(
    *, organization: Organization, on_progress: ProgressCallback | None = None
) -> list[MailboxSyncReport]:
    """Poll every enabled mailbox of an organization; one failing mailbox does not stop the rest."""
    reports = []
    for mailbox in email_selectors.mailbox_list(organization=organization, enabled=True):
        reports.append(mailbox_poll(mailbox=mailbox, on_progress=on_progress))
    return reports


def email_sync_organization_summary(
    *, organization: Organization, on_progress: ProgressCallback | None = None
) -> dict[str, Any]:
    """The "email" entry of the sync registry: a JSON summary, TransientError to retry later."""
    reports = email_sync_organization(organization=organization, on_progress=on_progress)
    summary: dict[str, Any] = {"mailboxes": [report.as_dict() for report in reports]}
    for state in InboundEmailState.values:
        summary[state] = sum(getattr(report, state) for report in reports)
    summary["errors"] = [
        {"mailbox": report.mailbox, "kind": report.error_kind, "error": report.error}
        for report in reports
        if report.error
    ]
    transient = [report for report in reports if report.transient]
    if transient:
        raise TransientError(
            f"e-mail sync of {organization.slug}: "
            + "; ".join(f"{report.mailbox}: {report.error}" for report in transient)
        )
    return summary


def mailbox_poll_enqueue(*, mailbox: Mailbox, triggered_by: str = "system") -> str:
    """Enqueue a poll of one mailbox (after commit); returns the task id."""
    return task_enqueue(
        name=SYNC_MAILBOX_TASK,
        kwargs={"mailbox_id": mailbox.pk, "organization_id": mailbox.organization_id},
        triggered_by=triggered_by,
    )


def mailbox_poll_enqueue_all(
    *, organization: Organization | None = None, triggered_by: str = "system"
) -> dict[str, str]:
    """One poll task per enabled mailbox (of one organization, or all); {mailbox id: task id}."""
    return {
        str(mailbox.pk): mailbox_poll_enqueue(mailbox=mailbox, triggered_by=triggered_by)
        for mailbox in email_selectors.mailbox_list(
            organization=organization, enabled=True, pollable=True
        )
    }


def email_sync_enqueue(*, organization: Organization, triggered_by: str = "system") -> str:
    """Enqueue an e-mail sync of the whole organization (one task with progress)."""
    return task_enqueue(
        name=MANUAL_SYNC_TASK,
        kwargs={"organization_id": organization.pk, "source": "email"},
        triggered_by=triggered_by,
    )
