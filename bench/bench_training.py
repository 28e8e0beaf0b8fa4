"""Training on the whole shared data set: the project's path against what it is made of.

All three rows are measured in one process, in the same run, on the 5,431 tickets of the
shipped copy of the shared file imported through `tickets_import_csv` (category labels):

1. `mlmodels.services.model_train` (what `train_organization_model_task` and `train_models`
   run: read the labels, split, 9-candidate grid by 3-fold CV, out-of-fold temperature,
   hold-out fit and evaluation, refit on all, serialize, store, promotion gate) against
   `training.fit` + serialize of the configuration it chose, on the same tickets;
2. the same `model_train` against the training #19 replaced (one fixed configuration: C=1
   balanced LinearSVC in a 5-fold temperature-calibrated ensemble on the 80 % split, then
   predicting the 20 %): #19 allows at most 2x;
3. the grid search alone (`training.select` on the training split, n-gram counts made once,
   each fold's TF-IDF fitted once for all candidates) against one fit of the chosen
   configuration on that split.

    python -m bench bench_training      # or: make bench (every benchmark)

Database: as bench/common.py sets it up (a throwaway PostgreSQL database with
DATABASE_URL=postgresql://…, else SQLite in a temporary folder). No worker: the task is a
thin wrapper of `model_train`, and bench_ml measures it on a worker.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import setup_django, teardown_django

REPEATS = 2


def _previous_training_seconds(texts: list[str], labels: list[str]) -> float:
    """The training #19 replaced: fixed C=1 balanced SVM, 5-fold temperature ensemble, 80 %."""
    import numpy as np
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    from mlmodels import training

    params = training.TrainingParams(min_class_examples=5)
    train_texts, test_texts, train_labels, _ = training.split(
        texts=texts, labels=labels, params=params
    )
    started = time.perf_counter()
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float64)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, dtype=np.float64
                ),
            ),
        ]
    )
    classifier = CalibratedClassifierCV(
        LinearSVC(C=1.0, class_weight="balanced", random_state=0),
        method="temperature",
        cv=5,
        ensemble=True,
    )
    pipeline = Pipeline([("features", features), ("classifier", classifier)])
    pipeline.fit(train_texts, train_labels)
    pipeline.predict_proba(test_texts)
    return time.perf_counter() - started


def _measure(organization: Any) -> list[dict[str, Any]]:
    from mlmodels import services, training
    from mlmodels.models import ModelVersion
    from tickets.selectors import ticket_training_examples

    examples = ticket_training_examples(organization=organization, target="category")
    texts = [text for _, text, _ in examples]
    labels = [label for _, _, label in examples]
    params = services.default_params()
    trains, chosen_fits, previous, grids, singles = [], [], [], [], []
    for _ in range(REPEATS):
        # Each round trains a first version (no active model to compare with).
        ModelVersion.objects.filter(organization=organization).delete()
        started = time.perf_counter()
        outcome = services.model_train(organization=organization, target="category")
        trains.append(time.perf_counter() - started)
        version = outcome.version
        assert version is not None, outcome.reason
        chosen = version.selection["chosen"]
        kept = [
            (t, label) for t, label in zip(texts, labels, strict=True) if label in version.labels
        ]
        started = time.perf_counter()
        pipeline = training.fit(
            texts=[t for t, _ in kept],
            labels=[label for _, label in kept],
            params=dataclasses.replace(params, **chosen),
        )
        training.serialize(pipeline=pipeline)
        chosen_fits.append(time.perf_counter() - started)
        previous.append(_previous_training_seconds(texts, labels))

        # The grid alone vs one fit of the chosen configuration, on one training split.
        train_texts, _, train_labels, _ = training.split(texts=texts, labels=labels, params=params)
        counts = training.TextCounts(texts=train_texts, params=params)
        rows = list(range(len(train_texts)))
        started = time.perf_counter()
        selection = training.select(counts=counts, rows=rows, labels=train_labels, params=params)
        grids.append(time.perf_counter() - started)
        started = time.perf_counter()
        training._fit_rows(
            counts=counts,
            rows=rows,
            labels=train_labels,
            params=dataclasses.replace(params, **selection["chosen"]),
            temperature=1.0,
        )
        singles.append(time.perf_counter() - started)

    train, chosen_fit = statistics.median(trains), statistics.median(chosen_fits)
    old = statistics.median(previous)
    grid, single = statistics.median(grids), statistics.median(singles)
    n_candidates = len(selection["candidates"])
    where = f"median of {REPEATS}, same process and run"
    return [
        {
            "name": "ml_training_full_file",
            "value": round(train, 2),
            "baseline": round(chosen_fit, 2),
            "ratio": round(train / chosen_fit, 3),
            "unit": "s",
            "note": (
                f"model_train (category, {len(texts)} labelled tickets: read, split, "
                f"{n_candidates}-candidate grid by {selection['cv_folds']}-fold CV, OOF "
                "temperature from the grid's fold models, hold-out fit and evaluation, refit "
                "on all, serialize, store, gate) "
                f"vs training.fit + serialize of the configuration it chose ({chosen}) on all "
                f"{len(kept)} tickets of kept classes; {where}"
            ),
        },
        {
            "name": "ml_training_full_file_vs_pre19",
            "value": round(train, 2),
            "baseline": round(old, 2),
            "ratio": round(train / old, 3),
            "unit": "s",
            "note": (
                "model_train (as above) vs the training #19 replaced (TF-IDF + 5-fold "
                "temperature ensemble of C=1 balanced LinearSVCs on the 80 % split, predict the "
                f"20 %); {where}; #19 allows <= 2x"
            ),
        },
        {
            "name": "ml_training_grid_cost",
            "value": round(grid, 2),
            "baseline": round(single, 2),
            "ratio": round(grid / single, 3),
            "unit": "s",
            "note": (
                f"training.select: GridSearchCV over {n_candidates} candidates x "
                f"{selection['cv_folds']} folds on the {len(rows)}-ticket training split "
                "(n-gram counts made once, each fold's TF-IDF fitted once for all candidates) "
                "vs one fit of the chosen "
                "configuration on the same split: the grid's cost in whole fits; "
                f"{where}"
            ),
        },
    ]


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="zenith-bench-training-") as name:
        database = setup_django(Path(name), name="training")

        from mlmodels import registry
        from tickets.demo import DEMO_DATASET
        from tickets.services import organization_get_or_create, tickets_import_csv

        try:
            organization, _ = organization_get_or_create(slug="bench-training")
            tickets_import_csv(
                organization=organization,
                path=DEMO_DATASET,
                text_columns=["title", "body"],
                label_columns={"category": "category", "priority": "urgency"},
            )
            rows = _measure(organization)
            for row in rows:
                row["note"] += f"; {database}"
        finally:
            registry.cache_clear()
            teardown_django(database)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
