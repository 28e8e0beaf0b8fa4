"""Training a target's model: readiness, the held-out split, the artifact, then the gate.

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
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from mlmodels import registry, selectors, training
from mlmodels.models import ModelStatus, ModelVersion, Target
from mlmodels.services.common import (
    MIN_CLASSES,
    MIN_TOTAL_LABELS,
    TRAIN_STEPS,
    TRAIN_TASK,
    Progress,
    default_params,
    no_progress,
)
from mlmodels.services.promotion import version_gate
from taskops.services import task_enqueue
from tickets.models import Organization
from tickets.selectors import ticket_training_examples


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
    has never seen joins them. The candidate's hold-out model is trained on neither; a serving
    model shipped on all labels did learn from its own held-out tickets, so the gate compares
    on the ones it never saw (see `promotion.version_gate`). None when nothing is left to test.
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


@dataclass
class _Examples:
    """A target's labelled tickets, as parallel lists."""

    ids: list[int]
    texts: list[str]
    labels: list[str]


@dataclass
class _Fitted:
    """A fitted candidate and what it was measured on."""

    pipeline: Any
    holdout_pipeline: Any
    metrics: dict[str, Any]
    selection: dict[str, Any]
    n_train: int
    n_shipped: int
    test_positions: list[int]
    test_texts: list[str]
    test_labels: list[str]


def _version_finished_by_task(
    *, organization: Organization, target: str, task_id: str
) -> ModelVersion | None:
    """The version this task already trained to a decision (a redelivered task reports it)."""
    if not task_id:
        return None
    return ModelVersion.objects.filter(
        organization=organization,
        target=target,
        trained_by_task_id=task_id,
        status__in=[ModelStatus.ACTIVE, ModelStatus.REJECTED, ModelStatus.RETIRED],
    ).first()


def _examples_read(*, organization: Organization, target: str) -> _Examples:
    examples = ticket_training_examples(organization=organization, target=target)
    return _Examples(
        ids=[ticket_id for ticket_id, _, _ in examples],
        texts=[text for _, text, _ in examples],
        labels=[label for _, _, label in examples],
    )


def _fit_and_measure(
    *,
    organization: Organization,
    target: str,
    examples: _Examples,
    params: training.TrainingParams,
) -> _Fitted:
    """Select, measure on the held-out split (sticky when a model serves), refit on all."""
    ids, texts, labels = examples.ids, examples.texts, examples.labels
    previous = selectors.model_version_active(organization=organization, target=target)
    sticky = (
        _sticky_split(ids=ids, labels=labels, params=params, previous=previous)
        if previous is not None
        else None
    )
    result = training.train_and_evaluate(
        texts=texts,
        labels=labels,
        params=params,
        split_positions=None if sticky is None else (sticky[0], sticky[1]),
    )
    return _Fitted(
        pipeline=result.pipeline,
        holdout_pipeline=result.holdout_pipeline,
        metrics={
            **result.metrics,
            "dropped_labels": result.dropped_labels,
            "sticky_split": sticky is not None,
        },
        selection=result.selection,
        n_train=result.n_train,
        n_shipped=result.n_shipped,
        test_positions=result.test_indices,
        test_texts=result.test_texts,
        test_labels=result.test_labels,
    )


def _version_store(
    *,
    version: ModelVersion,
    fitted: _Fitted,
    examples: _Examples,
    watermark: dict[str, int],
    started: float,
) -> ModelVersion:
    """Save the artifact and everything measured about it; the version becomes READY."""
    registry.artifact_save(version=version, data=training.serialize(pipeline=fitted.pipeline))
    version.metrics = fitted.metrics
    version.selection = fitted.selection
    version.n_shipped = fitted.n_shipped
    version.labels = [str(label) for label in fitted.pipeline.classes_]
    version.label_counts = dict(sorted(Counter(examples.labels).items()))
    version.training_set_size = len(examples.labels)
    version.n_train = fitted.n_train
    version.n_test = len(fitted.test_positions)
    version.test_ticket_ids = [examples.ids[i] for i in fitted.test_positions]
    version.label_watermark = watermark
    version.library_versions = training.library_versions()
    version.trained_at = timezone.now()
    version.training_seconds = round(time.perf_counter() - started, 3)
    version.status = ModelStatus.READY
    version.save()
    # The worker that trained it will likely serve it (or judge the next candidate by it).
    registry.cache_put(version=version, pipeline=fitted.pipeline)
    return version


def _version_fail(*, version: ModelVersion, exc: BaseException) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelStatus.FAILED,
        error="".join(traceback.format_exception_only(type(exc), exc)).strip()[:5000],
    )


def model_train(
    *,
    organization: Organization,
    target: str,
    params: training.TrainingParams | None = None,
    task_id: str = "",
    triggered_by: str = "",
    on_progress: Progress = no_progress,
) -> TrainOutcome:
    """Train a new version of the organization's `target` model and run the promotion gate.

    Idempotent per task id: a redelivered task finishes its own version instead of adding one.
    """
    if target not in Target.values:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(Target.values)}")
    params = params or default_params()
    done = _version_finished_by_task(organization=organization, target=target, task_id=task_id)
    if done is not None:
        return TrainOutcome(target=target, status=done.status, version=done)

    watermark = selectors.label_watermark(organization=organization, target=target)
    examples = _examples_read(organization=organization, target=target)
    # Classes the split would drop do not count towards readiness.
    ready = training.readiness(
        labels=examples.labels,
        min_total=MIN_TOTAL_LABELS,
        min_classes=MIN_CLASSES,
        min_per_class=max(params.min_class_examples, 2),
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
    n_labels = len(examples.labels)
    on_progress(
        0, TRAIN_STEPS, f"{target}: training v{version.version} on {n_labels} labelled tickets"
    )
    started = time.perf_counter()
    # Whatever stops training (an error, a worker shutdown) leaves the version FAILED, with why.
    try:
        ModelVersion.objects.filter(pk=version.pk).update(status=ModelStatus.TRAINING, error="")
        fitted = _fit_and_measure(
            organization=organization, target=target, examples=examples, params=params
        )
        n_test = len(fitted.test_positions)
        on_progress(1, TRAIN_STEPS, f"{target}: evaluating on {n_test} held-out tickets")
        on_progress(2, TRAIN_STEPS, f"{target}: saving the artifact")
        version = _version_store(
            version=version, fitted=fitted, examples=examples, watermark=watermark, started=started
        )
        on_progress(3, TRAIN_STEPS, f"{target}: comparing v{version.version} with the active model")
        version = version_gate(
            candidate=version,
            holdout_pipeline=fitted.holdout_pipeline,
            test_ticket_ids=[examples.ids[i] for i in fitted.test_positions],
            test_texts=fitted.test_texts,
            test_labels=fitted.test_labels,
        )
    except BaseException as exc:
        _version_fail(version=version, exc=exc)
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
    on_progress: Progress = no_progress,
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


REPEATED_METRICS = ("accuracy", "macro_f1", "ece", "coverage_at_95")


def model_evaluate_repeated(
    *, organization: Organization, target: str, repeats: int, on_progress: Progress = no_progress
) -> dict[str, Any]:
    """Train and measure the current labels on `repeats` stratified splits (seeds 0..N-1).

    Nothing is stored: this says how much the held-out figures move with the split. Each run
    selects its own configuration, as training does.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    examples = _examples_read(organization=organization, target=target)
    base = default_params()
    runs = []
    for seed in range(repeats):
        on_progress(seed, repeats, f"{target}: split {seed + 1} of {repeats}")
        result = training.train_and_evaluate(
            texts=examples.texts,
            labels=examples.labels,
            params=dataclasses.replace(base, seed=seed),
        )
        runs.append(
            {
                "seed": seed,
                "n_test": result.n_test,
                **{name: result.metrics[name] for name in REPEATED_METRICS},
                "chosen": result.selection["chosen"],
            }
        )
    on_progress(repeats, repeats, f"{target}: {repeats} splits measured")
    summary: dict[str, Any] = {"target": target, "repeats": repeats, "runs": runs}
    for name in REPEATED_METRICS:
        values = [run[name] for run in runs]
        mean = sum(values) / len(values)
        spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        summary[name] = {"mean": round(mean, 4), "std": round(spread, 4), "min": min(values)}
    return summary
