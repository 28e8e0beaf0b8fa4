"""Train, evaluate, explain and (de)serialise the ticket classifier.

Pure scikit-learn: no Django here, so the module can be trained, tested and benchmarked
without a database. The chosen pipeline (measured on the Endava sample, `category`, stratified
80/20 split with seed 0, classes under 10 rows dropped) is

    word 1-2-gram TF-IDF + char_wb 2-5-gram TF-IDF (both sublinear)
    -> LinearSVC(C=1, class_weight="balanced")
    -> CalibratedClassifierCV(method="temperature", cv=5, ensemble=True)

Temperature scaling divides every class score by the same number, so each fold model keeps the
balanced SVM's ranking of classes (which is what lifts macro-F1) while the probabilities become
honest (which is what makes ECE and coverage at 95% precision good). Per-class sigmoid or
isotonic calibration was equally accurate but pulled predictions back to the majority classes
(macro-F1 about 0.44).
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
import weakref
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy
import sklearn
import skops
import skops.io as sio
from scipy import sparse
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

__all__ = [
    "TRUSTED_TYPES",
    "Prediction",
    "Readiness",
    "TrainingParams",
    "TrainingResult",
    "UntrustedArtifactError",
    "build_pipeline",
    "compose_text",
    "deserialize",
    "evaluate",
    "fit",
    "library_versions",
    "predict",
    "readiness",
    "serialize",
    "sha256",
    "split",
    "train_and_evaluate",
]

CalibrationMethod = Literal["temperature", "sigmoid", "isotonic"]

# Precision a ticket must be answered at for the coverage metric.
TARGET_PRECISION = 0.95
ECE_BINS = 10
TOP_TERMS = 5

# skops loads every scikit-learn estimator it knows without being told; these are the only
# other types our pipelines contain (the private per-fold calibration wrappers). Anything else
# in an artifact was not written by `serialize` and is refused.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._TemperatureScaling",
        "sklearn.calibration._SigmoidCalibration",
    }
)


class UntrustedArtifactError(ValueError):
    """A model artifact that is not a skops file or contains types outside the allow-list."""

    def __init__(self, message: str, *, types: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.types = list(types)


@dataclass(frozen=True)
class TrainingParams:
    """Every knob of a training run; plain values so `dataclasses.asdict` gives JSON."""

    seed: int = 0
    test_size: float = 0.2
    # Classes with fewer labelled tickets than this are dropped before the split: with under
    # 10 rows a class gets at most 2 held-out tickets, too few to measure it or calibrate it.
    # The model then never predicts such a class. Values below 2 act as 2 (a stratified split
    # needs two examples per class).
    min_class_examples: int = 10
    C: float = 1.0
    class_weight_balanced: bool = True
    calibration_method: CalibrationMethod = "temperature"
    # Upper bound: `fit` lowers it to the size of the smallest class so small data still trains.
    calibration_folds: int = 5
    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    min_df: int = 1
    sublinear_tf: bool = True

    def __post_init__(self) -> None:
        """Reject values that would only fail later, deep inside scikit-learn."""
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size must be between 0 and 1, got {self.test_size}")
        if self.C <= 0:
            raise ValueError(f"C must be positive, got {self.C}")
        if self.calibration_method not in ("temperature", "sigmoid", "isotonic"):
            raise ValueError(f"unknown calibration_method {self.calibration_method!r}")
        if self.calibration_folds < 2:
            raise ValueError(f"calibration_folds must be at least 2, got {self.calibration_folds}")
        if self.word_ngram_max < 1 or not 1 <= self.char_ngram_min <= self.char_ngram_max:
            raise ValueError("n-gram ranges must be positive and ordered")
        if self.min_df < 1:
            raise ValueError(f"min_df must be at least 1, got {self.min_df}")


@dataclass(frozen=True)
class Readiness:
    """Whether a label set is big and varied enough to train on, and why (not)."""

    ready: bool
    reason: str


@dataclass(frozen=True)
class Prediction:
    """One ticket's predicted label, its calibrated probability and the words behind it."""

    label: str
    confidence: float
    top_terms: list[str]


@dataclass(frozen=True)
class TrainingResult:
    """A fitted pipeline, its held-out metrics and the held-out tickets they were measured on."""

    pipeline: Pipeline
    metrics: dict[str, Any]
    labels: list[str]
    n_train: int
    n_test: int
    # Positions in the caller's texts/labels, so another model can be scored on the same tickets.
    test_indices: list[int]
    test_texts: list[str]
    test_labels: list[str]
    dropped_labels: dict[str, int] = field(default_factory=dict)
    training_seconds: float = 0.0


def compose_text(*, title: str | None, body: str | None) -> str:
    """The text the model sees for a ticket: title and body joined by a space."""
    return f"{title or ''} {body or ''}".strip()


def build_pipeline(*, params: TrainingParams) -> Pipeline:
    """An unfitted TF-IDF + calibrated linear SVM pipeline configured by `params`."""
    features = FeatureUnion(
        [
            (
                "word",
                TfidfVectorizer(
                    ngram_range=(1, params.word_ngram_max),
                    sublinear_tf=params.sublinear_tf,
                    min_df=params.min_df,
                    dtype=np.float64,
                ),
            ),
            (
                # char_wb n-grams survive typos, inflections and the stripped/anonymised text
                # of real tickets that whole words miss.
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(params.char_ngram_min, params.char_ngram_max),
                    sublinear_tf=params.sublinear_tf,
                    min_df=params.min_df,
                    dtype=np.float64,
                ),
            ),
        ]
    )
    svm = LinearSVC(
        C=params.C,
        class_weight="balanced" if params.class_weight_balanced else None,
        random_state=params.seed,
    )
    # An int cv means unshuffled StratifiedKFold: deterministic without storing a splitter
    # object (one type fewer for the skops allow-list).
    classifier = CalibratedClassifierCV(
        svm, method=params.calibration_method, cv=params.calibration_folds, ensemble=True
    )
    return Pipeline([("features", features), ("classifier", classifier)])


def readiness(
    *,
    labels: Sequence[str | None],
    min_total: int = 30,
    min_classes: int = 2,
    min_per_class: int = 5,
) -> Readiness:
    """Gate training: enough labelled tickets in total and enough classes with enough examples.

    30 labelled tickets is the default floor: with a 20% hold-out that leaves 6 test tickets,
    the least that still gives every one of 2-3 classes a test example. Empty labels count as
    unlabelled. To be sure `split` keeps at least `min_classes` classes, pass
    `min_per_class=params.min_class_examples`.
    """
    present = [str(label) for label in labels if label not in (None, "")]
    counts = Counter(present)
    qualifying = sum(1 for n in counts.values() if n >= min_per_class)
    total = len(present)
    classes_part = f"{qualifying} classes have at least {min_per_class} examples"
    total_part = f"{total} labelled tickets"
    if qualifying >= min_classes and total >= min_total:
        return Readiness(ready=True, reason=f"ready: {classes_part}; {total_part}")
    return Readiness(
        ready=False,
        reason=(
            f"not enough labels: {classes_part}, need {min_classes}; {total_part}, need {min_total}"
        ),
    )


def _split_indices(
    *, labels: Sequence[str], params: TrainingParams
) -> tuple[list[int], list[int], dict[str, int]]:
    """Stratified train/test positions after dropping rare classes, plus the dropped counts."""
    counts = Counter(labels)
    floor = max(2, params.min_class_examples)
    dropped = {label: n for label, n in sorted(counts.items()) if n < floor}
    kept = [i for i, label in enumerate(labels) if label not in dropped]
    n_classes = len(counts) - len(dropped)
    if n_classes < 2:
        raise ValueError(
            f"not enough labels: {n_classes} classes have at least {floor} examples, need 2"
        )
    n = len(kept)
    # Round the test share up but keep one ticket of every class on each side, so tiny label
    # sets (30-40 tickets, 2-3 classes) still split instead of raising deep in scikit-learn.
    n_test = min(max(math.ceil(params.test_size * n), n_classes), n - n_classes)
    kept_labels = [labels[i] for i in kept]
    train_idx, test_idx = train_test_split(
        kept, test_size=n_test, stratify=kept_labels, random_state=params.seed
    )
    return [int(i) for i in train_idx], [int(i) for i in test_idx], dropped


def split(
    *, texts: Sequence[str], labels: Sequence[str], params: TrainingParams
) -> tuple[list[str], list[str], list[str], list[str]]:
    """Deterministic stratified (train_texts, test_texts, train_labels, test_labels)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    labels = [str(label) for label in labels]
    train_idx, test_idx, _ = _split_indices(labels=labels, params=params)
    return (
        [texts[i] for i in train_idx],
        [texts[i] for i in test_idx],
        [labels[i] for i in train_idx],
        [labels[i] for i in test_idx],
    )


def fit(*, texts: Sequence[str], labels: Sequence[str], params: TrainingParams) -> Pipeline:
    """Fit a fresh pipeline; the same data and seed always give the same model."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    labels = [str(label) for label in labels]
    counts = Counter(labels)
    if len(counts) < 2:
        raise ValueError(f"not enough labels: need at least 2 classes, got {len(counts)}")
    smallest = min(counts.values())
    if smallest < 2:
        rare = sorted(label for label, n in counts.items() if n < 2)
        raise ValueError(f"not enough labels: classes {rare} have a single example, need 2")
    pipeline = build_pipeline(params=params)
    # Calibration needs every class in every fold; small label sets get fewer folds.
    pipeline.set_params(classifier__cv=min(params.calibration_folds, smallest))
    pipeline.fit([text or "" for text in texts], labels)
    return pipeline


def _expected_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Weighted gap between confidence and accuracy over 10 equal-width confidence bins."""
    if confidence.size == 0:
        return 0.0
    bins = np.clip(np.ceil(confidence * ECE_BINS).astype(int) - 1, 0, ECE_BINS - 1)
    error = 0.0
    for b in range(ECE_BINS):
        in_bin = bins == b
        if in_bin.any():
            error += in_bin.mean() * abs(confidence[in_bin].mean() - correct[in_bin].mean())
    return float(error)


def _coverage_at(
    confidence: np.ndarray, correct: np.ndarray, target: float
) -> tuple[float, float | None, float | None]:
    """Largest share answerable at `target` precision, its threshold and its precision."""
    if confidence.size == 0:
        return 0.0, None, None
    order = np.argsort(-confidence, kind="stable")
    conf = confidence[order]
    running = np.cumsum(correct[order]) / np.arange(1, conf.size + 1)
    # Only cut where confidence changes: "answer when confidence >= threshold" must select
    # exactly the counted tickets, ties included.
    ends = np.r_[np.flatnonzero(np.diff(conf)), conf.size - 1]
    good = ends[running[ends] >= target]
    if good.size == 0:
        return 0.0, None, None
    last = int(good.max())
    return (last + 1) / conf.size, float(conf[last]), float(running[last])


def evaluate(*, pipeline: Pipeline, texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """JSON-ready held-out metrics: accuracy, macro-F1, per class, confusion, ECE, coverage."""
    labels = [str(label) for label in labels]
    proba = pipeline.predict_proba([text or "" for text in texts])
    classes = pipeline.classes_
    predicted = [str(c) for c in classes[proba.argmax(axis=1)]]
    confidence = proba.max(axis=1)
    correct = (np.asarray(predicted) == np.asarray(labels)).astype(float)
    names = sorted({str(c) for c in classes} | set(labels))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=names, zero_division=0
    )
    # Macro-F1 over the classes the test set contains: a class the model knows but the test
    # set lacks has no recall to measure.
    in_test = [i for i, name in enumerate(names) if name in set(labels)]
    coverage, threshold, precision_at = _coverage_at(confidence, correct, TARGET_PRECISION)
    return {
        "n_test": len(labels),
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(np.mean(f1[in_test])) if in_test else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "confusion_matrix": {
            "labels": names,
            "matrix": confusion_matrix(labels, predicted, labels=names).tolist(),
        },
        "ece": _expected_calibration_error(confidence, correct),
        "coverage_at_95": float(coverage),
        # None when no confidence level reaches 95% precision: answer nothing automatically.
        "threshold_at_95": threshold,
        "precision_at_threshold": precision_at,
    }


def train_and_evaluate(
    *, texts: Sequence[str], labels: Sequence[str], params: TrainingParams
) -> TrainingResult:
    """Split, fit on the training part and measure on the held-out part."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    labels = [str(label) for label in labels]
    train_idx, test_idx, dropped = _split_indices(labels=labels, params=params)
    started = time.perf_counter()
    pipeline = fit(
        texts=[texts[i] for i in train_idx],
        labels=[labels[i] for i in train_idx],
        params=params,
    )
    seconds = time.perf_counter() - started
    test_texts = [texts[i] for i in test_idx]
    test_labels = [labels[i] for i in test_idx]
    return TrainingResult(
        pipeline=pipeline,
        metrics=evaluate(pipeline=pipeline, texts=test_texts, labels=test_labels),
        labels=[str(c) for c in pipeline.classes_],
        n_train=len(train_idx),
        n_test=len(test_idx),
        test_indices=test_idx,
        test_texts=test_texts,
        test_labels=test_labels,
        dropped_labels=dropped,
        training_seconds=round(seconds, 3),
    )


# Per-pipeline (feature names, class x feature weights); building them costs tens of ms, too
# much to repeat for every single-ticket prediction. Weak keys: entries go with the pipeline.
_EXPLAINERS: weakref.WeakKeyDictionary[Pipeline, tuple[np.ndarray, np.ndarray | None]] = (
    weakref.WeakKeyDictionary()
)


def _class_weights(classifier: Any, n_features: int) -> np.ndarray | None:
    """Class x feature weights of the linear model(s), averaged over calibration folds."""
    classes = np.asarray(classifier.classes_)
    bases = [cc.estimator for cc in getattr(classifier, "calibrated_classifiers_", [])]
    if not bases:
        bases = [classifier]
    total = np.zeros((classes.size, n_features))
    for base in bases:
        coef = getattr(base, "coef_", None)
        if coef is None:
            return None
        coef = np.asarray(coef.toarray() if sparse.issparse(coef) else coef)
        base_classes = np.asarray(base.classes_)
        # Temperature calibration trains the folds on label-encoded targets (0..k-1); other
        # methods keep the original labels.
        if np.issubdtype(base_classes.dtype, np.integer) and classes.dtype.kind in "OUS":
            rows = base_classes
        else:
            rows = np.searchsorted(classes, base_classes)
        if coef.shape[0] == 1 and rows.size == 2:
            # Binary linear models keep one row for the second class; the first is its mirror.
            total[rows[1]] += coef[0]
            total[rows[0]] -= coef[0]
        else:
            total[rows] += coef
    return total / len(bases)


def _explainer(pipeline: Pipeline) -> tuple[np.ndarray, np.ndarray | None]:
    """Cached feature names and class weights for `pipeline`."""
    cached = _EXPLAINERS.get(pipeline)
    if cached is None:
        features = pipeline.named_steps["features"]
        names = np.concatenate(
            [
                np.asarray(vectorizer.get_feature_names_out(), dtype=object)
                for _, vectorizer in features.transformer_list
            ]
        )
        cached = (names, _class_weights(pipeline.named_steps["classifier"], names.size))
        _EXPLAINERS[pipeline] = cached
    return cached


def predict(*, pipeline: Pipeline, texts: Sequence[str]) -> list[Prediction]:
    """Label, calibrated confidence and up to 5 deciding terms for each text."""
    if len(texts) == 0:
        return []
    matrix = sparse.csr_matrix(pipeline.named_steps["features"].transform([t or "" for t in texts]))
    classifier = pipeline.named_steps["classifier"]
    proba = classifier.predict_proba(matrix)
    best = proba.argmax(axis=1)
    classes = [str(c) for c in classifier.classes_]
    names, weights = _explainer(pipeline)
    top: list[list[str]] = [[] for _ in texts]
    if weights is not None and matrix.nnz:
        # Contribution of each non-zero feature to its row's predicted class, all rows at once.
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        contribution = matrix.data * weights[best[rows], matrix.indices]
        order = np.lexsort((-contribution, rows))
        rank = np.arange(order.size) - matrix.indptr[rows[order]]
        chosen = order[(rank < TOP_TERMS) & (contribution[order] > 0)]
        for row, term in zip(
            rows[chosen].tolist(), names[matrix.indices[chosen]].tolist(), strict=True
        ):
            top[row].append(term)
    return [
        Prediction(label=classes[b], confidence=float(proba[i, b]), top_terms=top[i])
        for i, b in enumerate(best.tolist())
    ]


def serialize(*, pipeline: Pipeline) -> bytes:
    """Skops bytes of a fitted pipeline (deflate-compressed: the vocabulary dominates)."""
    return sio.dumps(pipeline, compression=zipfile.ZIP_DEFLATED)


def deserialize(*, data: bytes) -> Pipeline:
    """Load `serialize` output, refusing pickles and types outside `TRUSTED_TYPES`."""
    if not data.startswith(b"PK"):
        kind = "a pickle" if data[:1] == b"\x80" else "not a skops (zip) file"
        raise UntrustedArtifactError(
            f"refusing to load model artifact: it is {kind}; only skops artifacts are accepted"
        )
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise UntrustedArtifactError(
            f"refusing to load model artifact: not a readable skops file ({error})"
        ) from error
    unexpected = sorted(set(untrusted) - TRUSTED_TYPES)
    if unexpected:
        raise UntrustedArtifactError(
            f"refusing to load model artifact: untrusted types {', '.join(unexpected)}",
            types=unexpected,
        )
    loaded = sio.loads(data, trusted=list(untrusted))
    if not isinstance(loaded, Pipeline):
        raise UntrustedArtifactError(
            f"refusing model artifact: expected a Pipeline, got {type(loaded).__name__}"
        )
    return loaded


def sha256(data: bytes) -> str:
    """Hex SHA-256 of an artifact, to record and verify what was deployed."""
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions an artifact depends on; skops artifacts are only safe to load on the same ones."""
    return {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "skops": skops.__version__,
    }
