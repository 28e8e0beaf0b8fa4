"""How high macro-F1 can go on the quality test's splits, for issue #19's bars.

For seeds 1-3, the split of tests/mlmodels/test_quality.py (stratified 80/20 by category,
a one-row class kept on the training side). The features are the project's (word 1-2 and
char_wb 2-5 TF-IDF, sublinear) and the classifier a linear SVM with class weights
(n / (k * count)) ** power. Printed per seed, scored on the held-out 20 %:

- every setting of the project's grid (power 0 / 0.5 / 1, C 0.1 / 0.3 / 1);
- a ceiling: per-class offsets added to the decision function, chosen on the held-out
  tickets themselves to maximise their macro-F1 (an oracle no real model has).

Run: .venv/bin/python scripts/quality_ceiling.py [category|business_service]  (~4 min)
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion
from sklearn.preprocessing import LabelEncoder
from sklearn.svm import LinearSVC

DATA = Path(__file__).resolve().parent.parent / "zenith" / "data" / "it_tickets_endava_sample.csv"
SEEDS = (1, 2, 3)
POWERS = (0.0, 0.5, 1.0)
CS = (0.1, 0.3, 1.0)
MIN_CLASS_EXAMPLES = 3
OFFSETS = np.linspace(-1.5, 1.5, 31)


def _features() -> FeatureUnion:
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        ]
    )


def _scores(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    labels = sorted(set(truth))
    macro = f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
    return float(accuracy_score(truth, predicted)), float(macro)


def _oracle_offsets(scores: np.ndarray, classes: np.ndarray, truth: np.ndarray) -> float:
    """Coordinate ascent over one offset per class, judged on `truth` itself."""
    offsets = np.zeros(scores.shape[1])
    best = _scores(truth, classes[np.argmax(scores, axis=1)])[1]
    for _ in range(3):
        for k in range(scores.shape[1]):
            for value in OFFSETS:
                trial = offsets.copy()
                trial[k] = value
                macro = _scores(truth, classes[np.argmax(scores + trial, axis=1)])[1]
                if macro > best:
                    best, offsets = macro, trial
    return best


def main(column: str) -> None:
    with DATA.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    texts = np.array([f"{r['title'] or ''}\n{r['body'] or ''}" for r in rows], dtype=object)
    labels = np.array([r[column] for r in rows], dtype=object)
    category = [r["category"] for r in rows]
    counts = Counter(category)
    rest = np.array([i for i, c in enumerate(category) if counts[c] >= 2])
    single = np.array([i for i, c in enumerate(category) if counts[c] < 2], dtype=int)
    for seed in SEEDS:
        train, test = train_test_split(
            rest, test_size=0.2, stratify=[category[i] for i in rest], random_state=seed
        )
        train = np.concatenate([train, single])
        kept = Counter(labels[train])
        train = np.array([i for i in train if kept[labels[i]] >= MIN_CLASS_EXAMPLES])
        features = _features()
        X_train, X_test = features.fit_transform(texts[train]), features.transform(texts[test])
        encoder = LabelEncoder().fit(labels[train])
        encoded = encoder.transform(labels[train])
        sizes = np.bincount(encoded)
        results, ceiling = [], 0.0
        for power in POWERS:
            weights = (encoded.size / (sizes.size * sizes)) ** power
            for C in CS:
                model = LinearSVC(
                    C=C, class_weight=dict(enumerate(weights.tolist())), tol=1e-2
                ).fit(X_train, encoded)
                scores = model.decision_function(X_test)
                predicted = encoder.classes_[np.argmax(scores, axis=1)]
                accuracy, macro = _scores(labels[test], predicted)
                results.append(f"{power:g}/{C:g}: {accuracy:.3f} {macro:.3f}")
                ceiling = max(ceiling, _oracle_offsets(scores, encoder.classes_, labels[test]))
        print(f"seed {seed} {column} (power/C: accuracy macro-F1)  " + "  ".join(results))
        print(f"seed {seed} {column} ceiling with offsets fitted on the held-out: {ceiling:.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "category")
