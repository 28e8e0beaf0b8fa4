"""Training and classification tasks (queue `ml_tasks`); each is a thin call into services.

Every task here is idempotent (one prediction per ticket, target and version; one version
per training task id), so a message is acknowledged only after it ran (acks_late) and is
delivered again when a worker dies under it (reject_on_worker_lost).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from mlmodels import services
from taskops.base import ZenithTask, zenith_task
from taskops.services import TRIGGERED_BY_HEADER, task_enqueue
from tickets.models import Organization


def _triggered_by(task: ZenithTask) -> str:
    headers = getattr(task.request, "headers", None) or {}
    return str(
        headers.get(TRIGGERED_BY_HEADER)
        or getattr(task.request, TRIGGERED_BY_HEADER, "")
        or "system"
    )


@zenith_task("mlmodels.tasks.classify_ticket_task", bind=True)
def classify_ticket_task(
    self: ZenithTask, ticket_id: int, organization_id: int | None = None, **kwargs: Any
) -> dict[str, Any]:
    """Predict one ticket's category and priority with its organization's active models."""
    report = services.ticket_classify_by_id(ticket_id=ticket_id, organization_id=organization_id)
    if report is None:
        return {"ticket_id": ticket_id, "skipped": f"ticket {ticket_id} does not exist"}
    return {"ticket_id": ticket_id, **report.as_dict()}


@zenith_task("mlmodels.tasks.batch_classify_tickets_task", bind=True)
def batch_classify_tickets_task(
    self: ZenithTask,
    organization_id: int,
    ticket_ids: list[int] | None = None,
    after_id: int = 0,
    carried: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Classify the given tickets, or every ticket the active models have not seen yet.

    Works in slices of ZENITH_BATCH_SLICE_SIZE tickets: after each, the task replaces itself
    (same task id, same ledger row) with a message for the rest at bulk priority, so a new
    ticket's classification queued meanwhile runs first on this worker.
    """
    organization = Organization.objects.get(pk=organization_id)
    carried = dict(carried or {})
    if ticket_ids is None and not after_id:
        services.batch_pending_clear(organization_id=organization_id)
    done_before = int(carried.get("tickets", 0))

    def report_progress(done: int, pending: int, message: str) -> None:
        total = max(int(carried.get("total", 0)), done_before + pending)
        carried["total"] = total
        done += done_before
        self.progress(done=done, total=total, message=f"{done}/{total} tickets classified")

    report = services.tickets_classify(
        organization=organization,
        ticket_ids=ticket_ids,
        after_id=after_id,
        limit=settings.ZENITH_BATCH_SLICE_SIZE,
        on_progress=report_progress,
    )
    for key in ("tickets", "predictions", "applied", "needs_review"):
        carried[key] = int(carried.get(key, 0)) + getattr(report, key)
    if report.remaining and not report.skipped:
        rest = {"organization_id": organization_id, "after_id": report.last_id, "carried": carried}
        if ticket_ids is not None:
            rest["ticket_ids"] = [pk for pk in ticket_ids if pk > report.last_id]
        return self.replace(self.signature(kwargs=rest))  # type: ignore[no-any-return]
    # Tickets that arrived meanwhile may have been counted and then classified by their own
    # task: the finished batch reports what it did.
    if carried["tickets"]:
        done = carried["tickets"]
        self.progress(done=done, total=done, message=f"{done}/{done} tickets classified")
    result = report.as_dict()
    result.update(
        {key: carried[key] for key in ("tickets", "predictions", "applied", "needs_review")}
    )
    result["remaining"] = 0
    return result


@zenith_task("mlmodels.tasks.train_organization_model_task", bind=True)
def train_organization_model_task(
    self: ZenithTask,
    organization_id: int,
    targets: list[str] | None = None,
    only_changed: bool = False,
    classify_after: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Train the organization's models; each new version goes through the promotion gate.

    With ``classify_after`` the organization's unclassified tickets are then classified
    (a batch task), as a first start does for tickets imported before any model existed.
    """
    organization = Organization.objects.get(pk=organization_id)
    outcomes = services.organization_models_train(
        organization=organization,
        targets=targets,
        only_changed=only_changed,
        task_id=self.request.id or "",
        triggered_by=_triggered_by(self),
        on_progress=self.progress_callback(),
    )
    result: dict[str, Any] = {
        "organization_id": organization_id,
        "results": {outcome.target: outcome.as_dict() for outcome in outcomes},
    }
    if classify_after:
        result["classification_task_id"] = task_enqueue(
            name=services.BATCH_CLASSIFY_TASK,
            kwargs={"organization_id": organization_id},
            triggered_by=_triggered_by(self),
        )
    return result


@zenith_task("mlmodels.tasks.train_all_organizations_task", bind=True)
def train_all_organizations_task(self: ZenithTask, **kwargs: Any) -> dict[str, Any]:
    """Enqueue one training per organization with new labels since its last training."""
    enqueued = services.organizations_train_changed(triggered_by=_triggered_by(self))
    return {"enqueued": enqueued}
