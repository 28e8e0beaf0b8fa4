"""Automatic classification of new tickets: one task per ticket, one coalesced task per import."""

from __future__ import annotations

import structlog
from django.core.cache import cache

from mlmodels import selectors
from mlmodels.services.common import BATCH_CLASSIFY_TASK, CLASSIFY_TASK
from taskops.services import task_enqueue

logger = structlog.get_logger(__name__)

# Seconds a coalesced "classify what is new" task waits, so a bulk import's batches share it.
BATCH_COALESCE_SECONDS = 10


def _batch_pending_key(organization_id: int) -> str:
    return f"mlmodels:batch-classify-pending:{organization_id}"


def batch_pending_clear(*, organization_id: int) -> None:
    """Called when a classify-what-is-new run starts: later tickets need a run of their own."""
    cache.delete(_batch_pending_key(organization_id))


def tickets_created_classify(
    *, organization_id: int, ticket_ids: list[int], source: str
) -> list[str]:
    """Enqueue classification of freshly committed tickets; return the task ids.

    One ticket gets its own task; a bulk arrival (an import) gets one coalesced batch task
    for everything still unclassified. Nothing is enqueued without an active model.
    """
    if not ticket_ids or not selectors.organization_has_active_model(
        organization_id=organization_id
    ):
        return []
    if source == "import" or len(ticket_ids) > 1:
        key = _batch_pending_key(organization_id)
        # The mark lives exactly as long as the task's countdown: whatever arrives while it
        # is set is committed before that task can start, so it is picked up, even with a
        # per-process cache that never sees the task clear the mark.
        if not cache.add(key, "pending", timeout=BATCH_COALESCE_SECONDS):
            return []
        try:
            task_id = task_enqueue(
                name=BATCH_CLASSIFY_TASK,
                kwargs={"organization_id": organization_id},
                countdown=BATCH_COALESCE_SECONDS,
            )
        except Exception:
            cache.delete(key)
            raise
        logger.info(
            "batch_classification_enqueued",
            organization=organization_id,
            tickets=len(ticket_ids),
            classify_task_id=task_id,
        )
        return [task_id]
    task_id = task_enqueue(
        name=CLASSIFY_TASK,
        kwargs={"ticket_id": ticket_ids[0], "organization_id": organization_id},
    )
    logger.info(
        "classification_enqueued",
        organization=organization_id,
        ticket_id=ticket_ids[0],
        classify_task_id=task_id,
    )
    return [task_id]
