"""The promotion gate, manual activation and roll back of model versions."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from mlmodels import registry, selectors, training
from mlmodels.models import ModelStatus, ModelVersion
from mlmodels.registry import ArtifactError
from mlmodels.services.common import ModelStateError
from tickets.models import Organization

# A candidate is promoted unless its macro-F1 is lower than the active model's by more than this.
PROMOTION_TOLERANCE = 0.005
# Held-out tickets the active model never saw that a fair comparison needs.
MIN_GATE_TICKETS = 30


def _unseen_positions(*, active: ModelVersion, test_ticket_ids: list[int]) -> list[int]:
    """Positions of held-out tickets the active model did not learn from.

    A version shipped on all labels (n_shipped > 0) learned from every labelled ticket up to
    its watermark; an older one learned from all but its own held-out tickets.
    """
    seen_up_to = int(active.label_watermark.get("max_ticket_id", 0))
    held_out = set() if active.n_shipped else set(active.test_ticket_ids)
    return [
        i
        for i, ticket_id in enumerate(test_ticket_ids)
        if ticket_id > seen_up_to or ticket_id in held_out
    ]


def _compare(
    *,
    candidate: ModelVersion,
    active: ModelVersion,
    holdout_pipeline: Any,
    test_ticket_ids: list[int],
    test_texts: list[str],
    test_labels: list[str],
) -> dict[str, Any]:
    """Both models' scores on the same held-out tickets, and the decision."""
    try:
        active_pipeline = registry.model_load(version=active)
    except ArtifactError as exc:
        return {"decision": f"promoted: the active model cannot be loaded ({exc})"}
    unseen = _unseen_positions(active=active, test_ticket_ids=test_ticket_ids)
    comparison: dict[str, Any] = {}
    if len(unseen) >= MIN_GATE_TICKETS and holdout_pipeline is not None:
        texts = [test_texts[i] for i in unseen]
        labels = [test_labels[i] for i in unseen]
        ours = training.evaluate(pipeline=holdout_pipeline, texts=texts, labels=labels)
        comparison.update(
            {
                "n_test": len(unseen),
                "candidate_macro_f1": ours["macro_f1"],
                "candidate_accuracy": ours["accuracy"],
                "active_trained_on_test": 0,
            }
        )
    else:
        # Too few tickets the active model never saw: compare on all held-out tickets, which
        # favours the active model (it learned from some of them); a candidate must beat that.
        texts, labels = test_texts, test_labels
        comparison["active_trained_on_test"] = len(test_labels) - len(unseen)
    theirs = training.evaluate(pipeline=active_pipeline, texts=texts, labels=labels)
    comparison["active_macro_f1"] = theirs["macro_f1"]
    comparison["active_accuracy"] = theirs["accuracy"]
    if comparison.get("candidate_macro_f1", candidate.macro_f1) >= (
        theirs["macro_f1"] - PROMOTION_TOLERANCE
    ):
        comparison["decision"] = "promoted: macro-F1 not lower than the active model's"
    else:
        comparison["decision"] = "rejected: macro-F1 lower than the active model's"
    return comparison


def version_gate(
    *,
    candidate: ModelVersion,
    test_texts: list[str],
    test_labels: list[str],
    test_ticket_ids: list[int] | None = None,
    holdout_pipeline: Any = None,
) -> ModelVersion:
    """Promote the candidate if it is at least as good as the serving model, else reject it.

    The candidate is judged by its hold-out model (trained without the held-out tickets);
    the serving model by its artifact, on the held-out tickets it never learned from when
    there are at least MIN_GATE_TICKETS of them.
    """
    ids = list(test_ticket_ids or [])
    for _attempt in range(3):
        active = selectors.model_version_active(
            organization=candidate.organization_id, target=candidate.target
        )
        comparison: dict[str, Any] = {
            "tolerance": PROMOTION_TOLERANCE,
            "n_test": len(test_labels),
            "candidate_version": candidate.version,
            "candidate_macro_f1": candidate.macro_f1,
            "candidate_accuracy": candidate.accuracy,
        }
        if active is None:
            comparison["decision"] = "promoted: no active model"
        else:
            comparison.update(
                {"active_version": active.version, "active_model_version_id": active.pk}
            )
            comparison.update(
                _compare(
                    candidate=candidate,
                    active=active,
                    holdout_pipeline=holdout_pipeline,
                    test_ticket_ids=ids if ids else [0] * len(test_labels),
                    test_texts=test_texts,
                    test_labels=test_labels,
                )
            )
        with transaction.atomic():
            Organization.objects.select_for_update().get(pk=candidate.organization_id)
            current = (
                ModelVersion.objects.select_for_update()
                .filter(
                    organization_id=candidate.organization_id,
                    target=candidate.target,
                    status=ModelStatus.ACTIVE,
                )
                .first()
            )
            if (current.pk if current else None) != (active.pk if active else None):
                continue  # someone promoted another version meanwhile: compare again
            candidate.comparison = comparison
            now = timezone.now()
            if comparison["decision"].startswith("promoted"):
                if current is not None:
                    current.status = ModelStatus.RETIRED
                    current.save(update_fields=["status"])
                candidate.status = ModelStatus.ACTIVE
                candidate.activated_at = now
                candidate.activated_by = "gate"
            else:
                candidate.status = ModelStatus.REJECTED
            candidate.save(update_fields=["status", "comparison", "activated_at", "activated_by"])
        selectors.organization_has_active_model_forget(organization_id=candidate.organization_id)
        return candidate
    raise ModelStateError("the active model kept changing during the promotion check")


def model_activate(*, version: ModelVersion, activated_by: str = "") -> ModelVersion:
    """Make this version the serving one (a manual promotion or roll back)."""
    version.refresh_from_db()
    if version.status == ModelStatus.ACTIVE:
        return version
    if version.status in (ModelStatus.TRAINING, ModelStatus.FAILED):
        raise ModelStateError(f"version {version.version} is {version.status} and cannot serve")
    try:
        # Never activate what could not be loaded: this also verifies the artifact's hash.
        registry.model_load(version=version)
    except ArtifactError as exc:
        model_version_record_error(version=version, error=str(exc))
        raise ModelStateError(str(exc)) from exc
    with transaction.atomic():
        Organization.objects.select_for_update().get(pk=version.organization_id)
        ModelVersion.objects.filter(
            organization_id=version.organization_id,
            target=version.target,
            status=ModelStatus.ACTIVE,
        ).exclude(pk=version.pk).update(status=ModelStatus.RETIRED)
        version.status = ModelStatus.ACTIVE
        version.activated_at = timezone.now()
        version.activated_by = activated_by
        version.save(update_fields=["status", "activated_at", "activated_by"])
    selectors.organization_has_active_model_forget(organization_id=version.organization_id)
    return version


def model_rollback(
    *, organization: Organization, target: str, activated_by: str = ""
) -> ModelVersion:
    """Serve the previously served version again."""
    active = selectors.model_version_active(organization=organization, target=target)
    if active is None:
        raise ModelStateError(f"{organization.slug} has no active {target} model to roll back")
    previous = selectors.model_version_previous(version=active)
    if previous is None:
        raise ModelStateError(
            f"{organization.slug} has no earlier {target} version to roll back to"
        )
    return model_activate(version=previous, activated_by=activated_by)


def model_version_record_error(*, version: ModelVersion, error: str) -> None:
    """Keep the latest load or serving error on the version, where the admin and API show it."""
    ModelVersion.objects.filter(pk=version.pk).update(error=error[:5000])
    version.error = error[:5000]
    registry.cache_forget(version_id=version.pk)
