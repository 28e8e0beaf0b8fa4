"""Classification of tickets with the organization's active models."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sklearn
import structlog
from django.db import transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from mlmodels import registry, selectors, training
from mlmodels.models import ModelVersion, Prediction
from mlmodels.registry import ArtifactError
from mlmodels.services.common import MACHINE_LABEL_SOURCES, Progress, no_progress
from mlmodels.services.promotion import model_version_record_error
from tickets.models import LabelSource, Organization, Ticket

logger = structlog.get_logger(__name__)

CLASSIFY_CHUNK_SIZE = 500


@dataclass
class ClassifyReport:
    """What a classification run did."""

    organization_id: int
    tickets: int = 0
    predictions: int = 0
    applied: int = 0
    needs_review: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    skipped: str = ""
    # A run limited to a slice: the last ticket id it covered and how many are left after it.
    last_id: int = 0
    remaining: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _models_load(*, versions: dict[str, ModelVersion]) -> dict[str, Any]:
    pipelines = {}
    for target, version in versions.items():
        try:
            pipelines[target] = registry.model_load(version=version)
        except ArtifactError as exc:
            model_version_record_error(version=version, error=str(exc))
            raise
    return pipelines


def _tickets_update(
    *, groups: dict[tuple[tuple[tuple[str, str], ...], bool | None], list[int]]
) -> None:
    """One UPDATE per distinct change: model labels and the review flag, guarded in SQL.

    The guards re-check the label source in the same statement, so a person's edit that
    landed after the tickets were read is never overwritten.
    """
    now = timezone.now()
    machine = Q(category_source__in=MACHINE_LABEL_SOURCES) | Q(
        priority_source__in=MACHINE_LABEL_SOURCES
    )
    for (labels, flag), ids in groups.items():
        assignments: dict[str, Any] = {"updated_at": now}
        for target, label in labels:
            guard = Q(**{f"{target}_source__in": MACHINE_LABEL_SOURCES})
            source = f"{target}_source"
            assignments[target] = Case(When(guard, then=Value(label)), default=F(target))
            assignments[source] = Case(
                When(guard, then=Value(LabelSource.MODEL)), default=F(source)
            )
        if flag is not None:
            assignments["needs_review"] = Case(
                When(machine, then=Value(flag)), default=F("needs_review")
            )
        Ticket.objects.filter(pk__in=ids).update(**assignments)


def _classify_chunk(
    *,
    tickets: list[Ticket],
    versions: dict[str, ModelVersion],
    pipelines: dict[str, Any],
    threshold: float,
    report: ClassifyReport,
) -> list[Prediction]:
    """Predict, store and apply one chunk; returns the predictions made."""
    texts = [ticket.text for ticket in tickets]
    rows: list[Prediction] = []
    # Per ticket: the model labels to set, and whether an applied prediction was unsure.
    labels: dict[int, list[tuple[str, str]]] = defaultdict(list)
    unsure: dict[int, bool] = {}
    # Per ticket: the smallest margin among its unsure applied predictions (review order).
    margins: dict[int, float] = {}
    # Our own vectorizers made the features: sklearn's finiteness checks only cost time.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        predicted = {
            target: training.predict(pipeline=pipelines[target], texts=texts) for target in versions
        }
    for target, version in versions.items():
        for ticket, prediction in zip(tickets, predicted[target], strict=True):
            # A person's or an import's label is human truth: recorded beside, never replaced.
            applied = getattr(ticket, f"{target}_source") in MACHINE_LABEL_SOURCES
            rows.append(
                Prediction(
                    ticket_id=ticket.pk,
                    target=target,
                    model_version_id=version.pk,
                    label=prediction.label,
                    confidence=prediction.confidence,
                    margin=prediction.margin,
                    top_terms=prediction.top_terms,
                    applied=applied,
                )
            )
            if not applied:
                continue
            unsure[ticket.pk] = unsure.get(ticket.pk, False) or prediction.confidence < threshold
            if prediction.confidence < threshold and prediction.margin is not None:
                margins[ticket.pk] = min(
                    margins.get(ticket.pk, prediction.margin), prediction.margin
                )
            if (
                getattr(ticket, target) != prediction.label
                or getattr(ticket, f"{target}_source") != LabelSource.MODEL
            ):
                labels[ticket.pk].append((target, prediction.label))
    groups: dict[tuple[tuple[tuple[str, str], ...], bool | None], list[int]] = defaultdict(list)
    for ticket in tickets:
        flag = unsure.get(ticket.pk)
        if flag == ticket.needs_review:
            flag = None
        if labels[ticket.pk] or flag is not None:
            groups[(tuple(labels[ticket.pk]), flag)].append(ticket.pk)
    with transaction.atomic():
        Prediction.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        _tickets_update(groups=groups)
        if margins:
            Ticket.objects.filter(pk__in=margins).update(
                review_margin=Case(*(When(pk=pk, then=Value(m)) for pk, m in margins.items()))
            )
    report.tickets += len(tickets)
    report.predictions += len(rows)
    report.applied += sum(len(pairs) for pairs in labels.values())
    report.needs_review += sum(1 for flag in unsure.values() if flag)
    return rows


def _tickets_read(*, organization: Organization, ticket_ids: Sequence[int]) -> list[Ticket]:
    return list(
        Ticket.objects.filter(organization=organization, id__in=ticket_ids)
        .order_by("id")
        .only(
            "id",
            "subject",
            "body",
            "category",
            "category_source",
            "priority",
            "priority_source",
            "needs_review",
        )
    )


def tickets_classify(
    *,
    organization: Organization,
    ticket_ids: Sequence[int] | None = None,
    after_id: int = 0,
    limit: int | None = None,
    chunk_size: int = CLASSIFY_CHUNK_SIZE,
    on_progress: Progress = no_progress,
) -> ClassifyReport:
    """Predict every target with its active model for the given tickets (none: unclassified).

    Only tickets with ids above `after_id`, at most `limit` of them (in id order): a caller
    can work through a large set in slices, each reporting `last_id` and `remaining`.
    Progress counts against every ticket above `after_id`. Safe to run twice or
    concurrently: one prediction per ticket, target and version.
    """
    report = ClassifyReport(organization_id=organization.pk)
    versions = selectors.model_versions_active(organization=organization)
    if not versions:
        report.skipped = f"{organization.slug} has no active model"
        return report
    report.versions = {target: version.version for target, version in versions.items()}
    pipelines = _models_load(versions=versions)
    if ticket_ids is None:
        ids = selectors.ticket_ids_unclassified(
            organization=organization, versions=list(versions.values())
        )
    else:
        ids = sorted(set(ticket_ids))
    ids = [pk for pk in ids if pk > after_id]
    total = len(ids)
    now = ids if limit is None else ids[:limit]
    report.last_id = now[-1] if now else after_id
    report.remaining = total - len(now)
    on_progress(0, total, f"classifying {total} tickets")
    for start in range(0, len(now), chunk_size):
        tickets = _tickets_read(
            organization=organization, ticket_ids=now[start : start + chunk_size]
        )
        if tickets:
            _classify_chunk(
                tickets=tickets,
                versions=versions,
                pipelines=pipelines,
                threshold=organization.confidence_threshold,
                report=report,
            )
        done = min(start + chunk_size, len(now))
        on_progress(done, total, f"{done}/{total} tickets classified")
    logger.info(
        "tickets_classified",
        organization=organization.pk,
        tickets=report.tickets,
        needs_review=report.needs_review,
        model_versions=report.versions,
    )
    return report


def ticket_classify(*, ticket: Ticket) -> ClassifyReport:
    """Classify one (freshly read) ticket with its organization's active models."""
    organization = ticket.organization
    report = ClassifyReport(organization_id=organization.pk)
    versions = selectors.model_versions_active(organization=organization)
    if not versions:
        report.skipped = f"{organization.slug} has no active model"
        logger.info(
            "ticket_classification_skipped",
            organization=organization.pk,
            ticket_id=ticket.pk,
            reason="no active model",
        )
        return report
    report.versions = {target: version.version for target, version in versions.items()}
    predictions = _classify_chunk(
        tickets=[ticket],
        versions=versions,
        pipelines=_models_load(versions=versions),
        threshold=organization.confidence_threshold,
        report=report,
    )
    fields: dict[str, Any] = {}
    for prediction in predictions:
        fields[prediction.target] = prediction.label
        fields[f"{prediction.target}_confidence"] = round(prediction.confidence, 4)
        fields[f"{prediction.target}_model_version"] = versions[prediction.target].version
    logger.info(
        "ticket_classified",
        organization=organization.pk,
        ticket_id=ticket.pk,
        needs_review=report.needs_review > 0,
        **fields,
    )
    return report
