"""What mlmodels adds to the core from its own side: auto-classification and API fields."""

from __future__ import annotations

from typing import Any

import structlog
from django.db.models import Prefetch

from mlmodels import selectors, services
from mlmodels.models import Prediction, Target
from tickets.models import LabelSource, Organization, Ticket

logger = structlog.get_logger(__name__)

# One query for a page's predictions and the version numbers shown with them, into a plain
# list (no per-ticket queryset). A version row also holds its metrics and held-out ticket ids:
# only its number is loaded.
PREDICTIONS_PREFETCH = Prefetch(
    "predictions",
    queryset=Prediction.objects.select_related("model_version").only(
        *(field.name for field in Prediction._meta.concrete_fields), "model_version__version"
    ),
    to_attr=selectors.PREFETCHED_PREDICTIONS,
)


def classify_new_tickets(
    sender: Any, *, organization_id: int, ticket_ids: list[int], source: str, **kwargs: Any
) -> None:
    """On `tickets_created` (after commit): enqueue their classification."""
    try:
        services.tickets_created_classify(
            organization_id=organization_id, ticket_ids=list(ticket_ids), source=source
        )
    except Exception:
        # The tickets are committed either way; a batch run classifies them later.
        logger.exception(
            "classification_enqueue_failed",
            organization=organization_id,
            count=len(ticket_ids),
            ticket_ids=list(ticket_ids[:20]),
        )


def forget_reused_organization_id(
    sender: Any, *, instance: Organization, created: bool, **kwargs: Any
) -> None:
    """A new organization may reuse an id (a re-created database): forget the cached answer."""
    if created:
        selectors.organization_has_active_model_forget(organization_id=instance.pk)


# Target.values builds a new list on every access; this runs for every ticket of a page.
_TARGET_SOURCE_FIELDS = tuple((target, f"{target}_source") for target in Target.values)


def ticket_prediction_fields(ticket: Ticket) -> dict[str, Any]:
    """The newest prediction of each target: value, confidence, model version, needs_review."""
    latest = selectors.prediction_latest_by_target(ticket=ticket)
    threshold = ticket.organization.confidence_threshold
    predictions: dict[str, Any] = {}
    for target, source_field in _TARGET_SOURCE_FIELDS:
        prediction = latest.get(target)
        if prediction is None:
            predictions[target] = None
            continue
        machine_labelled = getattr(ticket, source_field) in ("", LabelSource.MODEL)
        predictions[target] = {
            "label": prediction.label,
            "confidence": round(prediction.confidence, 4),
            "margin": None if prediction.margin is None else round(prediction.margin, 4),
            "model_version": prediction.model_version.version,
            "model_version_id": prediction.model_version_id,
            "top_terms": prediction.top_terms,
            # A person's or an import's label needs no review, however unsure the model is.
            "needs_review": machine_labelled and prediction.confidence < threshold,
            "predicted_at": prediction.created_at.isoformat(),
        }
    return {"predictions": predictions}
