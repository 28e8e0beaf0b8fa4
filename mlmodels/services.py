"""Writes of the model registry: training with a promotion gate, activation, classification.

Readiness gate: a target is trained only with at least MIN_TOTAL_LABELS human or imported
labels, of which at least MIN_CLASSES classes have MIN_PER_CLASS examples each. 30 is the
floor because a 20 % hold-out of 30 tickets is 6 test tickets, the least that still gives each
of two or three classes a test example; fewer labels give a model whose metrics mean nothing.
"""

from __future__ import annotations

import dataclasses
import random
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sklearn
import structlog
from django.core.cache import cache
from django.db import transaction
from django.db.models import Case, F, Max, Q, Value, When
from django.utils import timezone

from mlmodels import registry, selectors, training
from mlmodels.models import ModelStatus, ModelVersion, Prediction, Target
from mlmodels.registry import ArtifactError
from taskops.services import task_enqueue
from tickets.models import LabelSource, Organization, Ticket
from tickets.selectors import ticket_training_examples

logger = structlog.get_logger(__name__)

MIN_TOTAL_LABELS = 30
MIN_CLASSES = 2
MIN_PER_CLASS = 5
# Classes with MIN_PER_CLASS labels are learned, not dropped: the gate and the model agree.
DEFAULT_PARAMS = training.TrainingParams(min_class_examples=MIN_PER_CLASS)
# A candidate is promoted unless its macro-F1 is lower than the active model's by more than this.
PROMOTION_TOLERANCE = 0.005
CLASSIFY_CHUNK_SIZE = 500
TRAIN_STEPS = 4
MACHINE_LABEL_SOURCES = ("", LabelSource.MODEL)

CLASSIFY_TASK = "mlmodels.tasks.classify_ticket_task"
BATCH_CLASSIFY_TASK = "mlmodels.tasks.batch_classify_tickets_task"
TRAIN_TASK = "mlmodels.tasks.train_organization_model_task"
TRAIN_ALL_TASK = "mlmodels.tasks.train_all_organizations_task"

# Seconds a coalesced "classify what is new" task waits, so a bulk import's batches share it.
BATCH_COALESCE_SECONDS = 10

Progress = Callable[[int, int, str], None]


class ModelStateError(Exception):
    """The version cannot make this transition (e.g. activating one that failed to train)."""


def _no_progress(done: int, total: int, message: str) -> None:
    return None


# ------------------------------------------------------------------------------
# Training and the promotion gate
# ------------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    """What training one target did: a version and its gate decision, or why it did not train."""

    target: str
    status: str
    reason: str = ""
    version: ModelVersion | None = None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"target": self.target, "status": self.status, "reason": self.reason}
        if self.version is not None:
            data.update(self.version.summary())
            data["status"] = self.status
            data["comparison"] = self.version.comparison
        return data


def _stable_share(ticket_id: int, seed: int) -> float:
    """A fixed pseudo-random number in [0, 1) per ticket: its held-out lot never changes."""
    return ((ticket_id * 2654435761 + seed * 40503) % 2**32) / 2**32


def _sticky_split(
    *,
    ids: Sequence[int],
    labels: Sequence[str],
    params: training.TrainingParams,
    previous: ModelVersion,
) -> tuple[list[int], list[int], dict[str, int]] | None:
    """(train, test positions, dropped classes) keeping the serving model's unseen tickets held out.

    The serving model's held-out tickets stay held out, and a fixed share of the tickets it
    has never seen joins them, so the gate compares both models on tickets neither was
    trained on. None when that leaves nothing to test on.
    """
    if not previous.test_ticket_ids:
        return None
    counts = Counter(labels)
    floor = max(2, params.min_class_examples)
    dropped = {label: n for label, n in sorted(counts.items()) if n < floor}
    held_out = set(previous.test_ticket_ids)
    seen_up_to = int(previous.label_watermark.get("max_ticket_id", 0))
    train: list[int] = []
    test: list[int] = []
    for position, (ticket_id, label) in enumerate(zip(ids, labels, strict=True)):
        if label in dropped:
            continue
        if ticket_id in held_out or (
            ticket_id > seen_up_to and _stable_share(ticket_id, params.seed) < params.test_size
        ):
            test.append(position)
        else:
            train.append(position)
    # Fitting needs two examples of every class: move held-out ones back where short.
    train_counts = Counter(labels[i] for i in train)
    for position in list(test):
        label = labels[position]
        if train_counts[label] < 2:
            test.remove(position)
            train.append(position)
            train_counts[label] += 1
    if not test or len(train_counts) < 2:
        return None
    # Fitting is order-sensitive (calibration folds are unshuffled): a seeded shuffle, as in
    # the first version's split, keeps it reproducible and free of the tickets' time order.
    order = random.Random(params.seed).sample(sorted(train), k=len(train))  # noqa: S311
    return order, test, dropped


def _version_allocate(
    *,
    organization: Organization,
    target: str,
    task_id: str,
    triggered_by: str,
    params: dict[str, Any],
    watermark: dict[str, int],
) -> ModelVersion:
    """A new TRAINING row with the next version number (or this task's row on redelivery)."""
    with transaction.atomic():
        # The organization row serializes version numbering and promotion per organization.
        Organization.objects.select_for_update().get(pk=organization.pk)
        if task_id:
            existing = ModelVersion.objects.filter(
                organization=organization, target=target, trained_by_task_id=task_id
            ).first()
            if existing is not None:
                return existing
        latest = ModelVersion.objects.filter(organization=organization, target=target).aggregate(
            latest=Max("version")
        )["latest"]
        return ModelVersion.objects.create(
            organization=organization,
            target=target,
            version=(latest or 0) + 1,
            status=ModelStatus.TRAINING,
            params=params,
            label_watermark=watermark,
            trained_by_task_id=task_id,
            triggered_by=triggered_by,
        )


def _gate(
    *,
    candidate: ModelVersion,
    test_texts: list[str],
    test_labels: list[str],
) -> ModelVersion:
    """Promote the candidate if it is at least as good as the serving model, else reject it."""
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
            try:
                active_pipeline = registry.model_load(version=active)
            except ArtifactError as exc:
                comparison["decision"] = f"promoted: the active model cannot be loaded ({exc})"
            else:
                active_metrics = training.evaluate(
                    pipeline=active_pipeline, texts=test_texts, labels=test_labels
                )
                comparison["active_macro_f1"] = active_metrics["macro_f1"]
                comparison["active_accuracy"] = active_metrics["accuracy"]
                if candidate.macro_f1 >= active_metrics["macro_f1"] - PROMOTION_TOLERANCE:
                    comparison["decision"] = "promoted: macro-F1 not lower than the active model's"
                else:
                    comparison["decision"] = "rejected: macro-F1 lower than the active model's"
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


def model_train(
    *,
    organization: Organization,
    target: str,
    params: training.TrainingParams | None = None,
    task_id: str = "",
    triggered_by: str = "",
    on_progress: Progress = _no_progress,
) -> TrainOutcome:
    """Train a new version of the organization's `target` model and run the promotion gate.

    Idempotent per task id: a redelivered task finishes its own version instead of adding one.
    """
    if target not in Target.values:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(Target.values)}")
    params = params or DEFAULT_PARAMS
    if task_id:
        done = ModelVersion.objects.filter(
            organization=organization,
            target=target,
            trained_by_task_id=task_id,
            status__in=[ModelStatus.ACTIVE, ModelStatus.REJECTED, ModelStatus.RETIRED],
        ).first()
        if done is not None:
            return TrainOutcome(target=target, status=done.status, version=done)

    watermark = selectors.label_watermark(organization=organization, target=target)
    examples = ticket_training_examples(organization=organization, target=target)
    ids = [ticket_id for ticket_id, _, _ in examples]
    texts = [text for _, text, _ in examples]
    labels = [label for _, _, label in examples]
    # Classes the split would drop do not count towards readiness.
    ready = training.readiness(
        labels=labels,
        min_total=MIN_TOTAL_LABELS,
        min_classes=MIN_CLASSES,
        min_per_class=max(MIN_PER_CLASS, params.min_class_examples, 2),
    )
    if not ready.ready:
        return TrainOutcome(target=target, status="not_enough_labels", reason=ready.reason)

    version = _version_allocate(
        organization=organization,
        target=target,
        task_id=task_id,
        triggered_by=triggered_by,
        params=dataclasses.asdict(params),
        watermark=watermark,
    )
    on_progress(
        0, TRAIN_STEPS, f"{target}: training v{version.version} on {len(labels)} labelled tickets"
    )
    started = time.perf_counter()
    try:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelStatus.TRAINING, error="")
        previous = selectors.model_version_active(organization=organization, target=target)
        sticky = (
            _sticky_split(ids=ids, labels=labels, params=params, previous=previous)
            if previous is not None
            else None
        )
        if sticky is None:
            result = training.train_and_evaluate(texts=texts, labels=labels, params=params)
            pipeline, metrics = result.pipeline, result.metrics
            test_positions, dropped = result.test_indices, result.dropped_labels
            n_train = result.n_train
        else:
            train_positions, test_positions, dropped = sticky
            pipeline = training.fit(
                texts=[texts[i] for i in train_positions],
                labels=[labels[i] for i in train_positions],
                params=params,
            )
            n_train = len(train_positions)
        test_texts = [texts[i] for i in test_positions]
        test_labels = [labels[i] for i in test_positions]
        on_progress(
            1, TRAIN_STEPS, f"{target}: evaluating on {len(test_positions)} held-out tickets"
        )
        if sticky is not None:
            metrics = training.evaluate(pipeline=pipeline, texts=test_texts, labels=test_labels)
        version.metrics = {**metrics, "dropped_labels": dropped, "sticky_split": sticky is not None}
        on_progress(2, TRAIN_STEPS, f"{target}: saving the artifact")
        data = training.serialize(pipeline=pipeline)
        registry.artifact_save(version=version, data=data)
        version.labels = [str(label) for label in pipeline.classes_]
        version.label_counts = dict(sorted(Counter(labels).items()))
        version.training_set_size = len(labels)
        version.n_train = n_train
        version.n_test = len(test_positions)
        version.test_ticket_ids = [ids[i] for i in test_positions]
        version.label_watermark = watermark
        version.library_versions = training.library_versions()
        version.trained_at = timezone.now()
        version.training_seconds = round(time.perf_counter() - started, 3)
        version.status = ModelStatus.READY
        version.save()
        # The worker that trained it will likely serve it (or judge the next candidate by it).
        registry.cache_put(version=version, pipeline=pipeline)
        on_progress(3, TRAIN_STEPS, f"{target}: comparing v{version.version} with the active model")
        version = _gate(candidate=version, test_texts=test_texts, test_labels=test_labels)
    except BaseException as exc:
        ModelVersion.objects.filter(pk=version.pk).update(
            status=ModelStatus.FAILED,
            error="".join(traceback.format_exception_only(type(exc), exc)).strip()[:5000],
        )
        raise
    on_progress(4, TRAIN_STEPS, f"{target}: v{version.version} {version.status}")
    return TrainOutcome(target=target, status=version.status, version=version)


def organization_models_train(
    *,
    organization: Organization,
    targets: Iterable[str] | None = None,
    only_changed: bool = False,
    task_id: str = "",
    triggered_by: str = "",
    on_progress: Progress = _no_progress,
) -> list[TrainOutcome]:
    """Train every (or the given) target of the organization, one after the other.

    With `only_changed`, targets whose labels did not move since their last training
    (or whose training is under way) are left alone: a duplicate scheduled run does nothing.
    """
    chosen = list(targets) if targets else list(Target.values)
    if only_changed:
        changed = set(selectors.targets_with_new_labels(organization=organization))
        if task_id:
            # A redelivered run reports the versions it already trained.
            changed |= set(
                ModelVersion.objects.filter(
                    organization=organization, trained_by_task_id=task_id
                ).values_list("target", flat=True)
            )
        chosen = [target for target in chosen if target in changed]
    outcomes = []
    for index, target in enumerate(chosen):

        def step(done: int, total: int, message: str, base: int = index * TRAIN_STEPS) -> None:
            on_progress(base + done, TRAIN_STEPS * len(chosen), message)

        outcomes.append(
            model_train(
                organization=organization,
                target=target,
                task_id=task_id,
                triggered_by=triggered_by,
                on_progress=step,
            )
        )
    return outcomes


def organizations_train_changed(*, triggered_by: str = "system") -> list[dict[str, Any]]:
    """Enqueue one training per organization whose labels changed since its last training."""
    enqueued = []
    for organization in Organization.objects.order_by("id"):
        targets = selectors.targets_with_new_labels(organization=organization)
        if not targets:
            continue
        task_id = task_enqueue(
            name=TRAIN_TASK,
            kwargs={"organization_id": organization.pk, "targets": targets, "only_changed": True},
            triggered_by=triggered_by,
        )
        enqueued.append(
            {"organization_id": organization.pk, "targets": targets, "task_id": task_id}
        )
    return enqueued


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


# ------------------------------------------------------------------------------
# Classification
# ------------------------------------------------------------------------------


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
                    top_terms=prediction.top_terms,
                    applied=applied,
                )
            )
            if not applied:
                continue
            unsure[ticket.pk] = unsure.get(ticket.pk, False) or prediction.confidence < threshold
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
    on_progress: Progress = _no_progress,
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


# ------------------------------------------------------------------------------
# Automatic classification of new tickets
# ------------------------------------------------------------------------------


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
