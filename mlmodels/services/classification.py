"""Classification of tickets with the organization's active models."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import sklearn
import structlog
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from mlmodels import inference, registry, selectors
from mlmodels.models import ModelVersion, Prediction, Target
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


class TicketRow(NamedTuple):
    """What classification reads of a ticket: its text, current labels and review flag."""

    pk: int
    text: str
    # Per target: (label, label source).
    labels: dict[str, tuple[str, str]]
    needs_review: bool


_ROW_FIELDS = (
    "id",
    "subject",
    "body",
    *(name for target in Target.values for name in (target, f"{target}_source")),
    "needs_review",
)


def _row(values: Sequence[Any]) -> TicketRow:
    """A TicketRow from `_ROW_FIELDS` values (the text as `Ticket.text` composes it)."""
    pk, subject, body, *labels, needs_review = values
    return TicketRow(
        pk=pk,
        text=f"{subject} {body}".strip(),
        labels={
            target: (labels[2 * i], labels[2 * i + 1]) for i, target in enumerate(Target.values)
        },
        needs_review=needs_review,
    )


def _ticket_row(ticket: Ticket) -> TicketRow:
    return _row([getattr(ticket, name) for name in _ROW_FIELDS])


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


def _predictions_write(
    *,
    rows: list[Prediction],
    changes: dict[int, tuple[dict[str, str], bool | None, float | None]],
    now: Any,
) -> None:
    """Insert the predictions and apply the ticket changes in one PostgreSQL statement.

    One round trip per chunk, whatever its size: the rows travel as arrays (`unnest`), the
    prediction insert is a data-modifying CTE of the ticket UPDATE, so both commit together.
    The CASE guards re-check the label source in the same statement, as `_tickets_update` does.
    """
    prediction_table = Prediction._meta.db_table
    ticket_table = Ticket._meta.db_table
    targets = list(Target.values)
    assignments = []
    for target in targets:
        guard = f"(u.{target} IS NOT NULL AND t.{target}_source = ANY(%(machine)s))"
        assignments.append(f"{target} = CASE WHEN {guard} THEN u.{target} ELSE t.{target} END")
        assignments.append(
            f"{target}_source = CASE WHEN {guard} THEN %(model)s ELSE t.{target}_source END"
        )
    machine = " OR ".join(f"t.{target}_source = ANY(%(machine)s)" for target in targets)
    assignments.append(
        "needs_review = CASE WHEN u.needs_review IS NOT NULL AND "
        f"({machine}) THEN u.needs_review ELSE t.needs_review END"
    )
    # The review order: the smallest margin of the ticket's unsure applied predictions.
    assignments.append("review_margin = COALESCE(u.review_margin, t.review_margin)")
    assignments.append("updated_at = %(now)s")
    columns = ", ".join(f"%(u_{target})s::text[]" for target in targets)
    sql = f"""
        WITH inserted AS (
            INSERT INTO {prediction_table} (ticket_id, target, model_version_id, label,
                confidence, margin, top_terms, applied, created_at)
            SELECT p.ticket_id, p.target, p.model_version_id, p.label, p.confidence, p.margin,
                p.top_terms::jsonb, p.applied, %(now)s
            FROM unnest(%(p_ticket)s::bigint[], %(p_target)s::text[], %(p_version)s::bigint[],
                %(p_label)s::text[], %(p_confidence)s::float8[], %(p_margin)s::float8[],
                %(p_terms)s::text[], %(p_applied)s::boolean[])
                AS p(ticket_id, target, model_version_id, label, confidence, margin, top_terms,
                applied)
            ON CONFLICT DO NOTHING
        )
        UPDATE {ticket_table} AS t SET {", ".join(assignments)}
        FROM unnest(%(u_id)s::bigint[], {columns}, %(u_review)s::boolean[],
            %(u_margin)s::float8[])
            AS u(id, {", ".join(targets)}, needs_review, review_margin)
        WHERE t.id = u.id
    """  # noqa: S608 - table and column names come from the models, values are parameters
    params: dict[str, Any] = {
        "now": now,
        "machine": list(MACHINE_LABEL_SOURCES),
        "model": LabelSource.MODEL.value,
        "p_ticket": [row.ticket_id for row in rows],
        "p_target": [row.target for row in rows],
        "p_version": [row.model_version_id for row in rows],
        "p_label": [row.label for row in rows],
        "p_confidence": [row.confidence for row in rows],
        "p_margin": [row.margin for row in rows],
        "p_terms": [json.dumps(row.top_terms) for row in rows],
        "p_applied": [row.applied for row in rows],
        "u_id": list(changes),
        "u_review": [flag for _, flag, _ in changes.values()],
        "u_margin": [margin for _, _, margin in changes.values()],
    }
    for target in targets:
        params[f"u_{target}"] = [labels.get(target) for labels, _, _ in changes.values()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _classify_chunk(
    *,
    tickets: list[TicketRow],
    versions: dict[str, ModelVersion],
    pipelines: dict[str, Any],
    threshold: float,
    report: ClassifyReport,
) -> list[Prediction]:
    """Predict, store and apply one chunk; returns the predictions made."""
    texts = [ticket.text for ticket in tickets]
    rows: list[Prediction] = []
    # Per ticket: the model labels to set, and whether an applied prediction was unsure.
    labels: dict[int, dict[str, str]] = defaultdict(dict)
    unsure: dict[int, bool] = {}
    # Per ticket: the smallest margin among its unsure applied predictions (review order).
    margins: dict[int, float] = {}
    # Our own vectorizers made the features: sklearn's finiteness checks only cost time.
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        predicted = inference.predict_all(
            pipelines={target: pipelines[target] for target in versions}, texts=texts
        )
    for target, version in versions.items():
        for ticket, prediction in zip(tickets, predicted[target], strict=True):
            label, source = ticket.labels[target]
            # A person's or an import's label is human truth: recorded beside, never replaced.
            applied = source in MACHINE_LABEL_SOURCES
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
            if label != prediction.label or source != LabelSource.MODEL:
                labels[ticket.pk][target] = prediction.label
    # Per ticket that changes: its new model labels, its review flag (None: unchanged) and
    # its review margin (None: unchanged).
    changes: dict[int, tuple[dict[str, str], bool | None, float | None]] = {}
    for ticket in tickets:
        flag = unsure.get(ticket.pk)
        if flag == ticket.needs_review:
            flag = None
        margin = margins.get(ticket.pk)
        if labels.get(ticket.pk) or flag is not None or margin is not None:
            changes[ticket.pk] = (labels.get(ticket.pk, {}), flag, margin)
    if connection.vendor == "postgresql":
        _predictions_write(rows=rows, changes=changes, now=timezone.now())
    else:
        groups: dict[tuple[tuple[tuple[str, str], ...], bool | None], list[int]] = defaultdict(list)
        for pk, (new_labels, flag, _margin) in changes.items():
            if new_labels or flag is not None:
                groups[(tuple(new_labels.items()), flag)].append(pk)
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


def _tickets_read(*, organization: Organization, ticket_ids: Sequence[int]) -> list[TicketRow]:
    return [
        _row(values)
        for values in Ticket.objects.filter(organization=organization, id__in=ticket_ids)
        .order_by("id")
        .values_list(*_ROW_FIELDS)
    ]


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
        # This slice's ids only, and a count of the rest: a slice of a large backlog does not
        # read every id after it.
        serving = list(versions.values())
        now = selectors.ticket_ids_unclassified(
            organization=organization, versions=serving, after_id=after_id, limit=limit
        )
        rest = 0
        if limit is not None and len(now) == limit:
            rest = selectors.ticket_count_unclassified(
                organization=organization, versions=serving, after_id=now[-1]
            )
        total = len(now) + rest
    else:
        ids = [pk for pk in sorted(set(ticket_ids)) if pk > after_id]
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


def ticket_classify_by_id(
    *, ticket_id: int, organization_id: int | None = None
) -> ClassifyReport | None:
    """Classify one ticket by id (within `organization_id` when given); None if there is none.

    The ticket, its organization and the organization's serving versions come in one query:
    what a new ticket's classify task runs, once per ticket.
    """
    read = selectors.ticket_serving_read(
        ticket_id=ticket_id, organization_id=organization_id, fields=_ROW_FIELDS
    )
    if read is None:
        return None
    ticket, versions = read
    return ticket_classify(ticket=ticket, versions=versions)


def ticket_classify(
    *, ticket: Ticket, versions: dict[str, ModelVersion] | None = None
) -> ClassifyReport:
    """Classify one (freshly read) ticket with its organization's active models (`versions`,
    read with the ticket, or else read here)."""
    organization = ticket.organization
    report = ClassifyReport(organization_id=organization.pk)
    if versions is None:
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
        tickets=[_ticket_row(ticket)],
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
