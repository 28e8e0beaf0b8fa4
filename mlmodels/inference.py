"""Serving predictions of fitted pipelines, computed from their public fitted attributes.

`training.predict` goes through scikit-learn's pipeline: for every call each vectorizer checks
it is fitted and validates its output, the FeatureUnion dispatches through joblib, the SVM
validates its input again, and each target's pipeline tokenises the same text again. For one
ticket that overhead is most of the time. A `TextModel` holds what a pipeline learned (each
TfidfVectorizer's analyzer, vocabulary and IDF; the linear model's coefficients, intercepts and
temperature) and computes the same features, scores, probabilities and top terms with a few
numpy operations. `predict_all` tokenises each text once per distinct analysis (word, char_wb)
and maps the n-grams into every target's vocabulary.

Nothing here reaches into scikit-learn's private state: only `build_analyzer()`,
`vocabulary_`, `idf_`, `get_feature_names_out()`, the constructor parameters, and the linear
model's `coef_`, `intercept_` and `classes_`. A pipeline of another shape, or one whose
decision scores or probabilities the compiled form does not reproduce on probe texts, is not
compiled, and `predict_all` uses `training.predict` for it.

No Django here (see training.py): tested and benchmarked without a database.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import FeatureUnion, Pipeline

from mlmodels import training

__all__ = ["TextModel", "predict_all", "text_model"]

# Parameters that decide which n-grams a vectorizer sees in a text: vectorizers equal in
# these share one tokenisation of each text, whatever their vocabularies.
_ANALYSIS_PARAMS = (
    "input",
    "encoding",
    "decode_error",
    "strip_accents",
    "lowercase",
    "preprocessor",
    "tokenizer",
    "analyzer",
    "stop_words",
    "token_pattern",
    "ngram_range",
)
# How closely the compiled scores must reproduce the pipeline's own on the probe texts.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class _Block:
    """One TfidfVectorizer's share of the feature columns."""

    key: tuple[tuple[str, str], ...]
    analyzer: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: np.ndarray | None
    sublinear_tf: bool
    binary: bool
    norm: str | None
    offset: int


@dataclass
class _Grams:
    """The n-grams of a list of texts under one analysis: per entry its row and its count."""

    counters: list[Counter[str]]
    rows: np.ndarray
    counts: np.ndarray


class TextModel:
    """A fitted TF-IDF + linear-SVM-with-temperature pipeline, as arrays."""

    def __init__(
        self,
        *,
        blocks: list[_Block],
        classes: list[str],
        weights: np.ndarray,
        intercept: np.ndarray,
        temperature: float,
        names: np.ndarray,
        calibrate: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.blocks = blocks
        self.classes = classes
        # Class x feature weights (the explanation) and their transpose (the scoring).
        self.weights = weights
        self._weights_t = np.ascontiguousarray(weights.T)
        self.intercept = intercept
        self.temperature = temperature
        # Decision scores -> probabilities: the classifier's own calibration when it offers
        # one from scores (Zenith's), else softmax(scores / T).
        self.calibrate = calibrate or (lambda scores: _softmax(scores / temperature))
        self.names = names
        self.n_features = weights.shape[1]

    # -- features ------------------------------------------------------------------------

    def features(self, texts: Sequence[str], grams: dict[Any, _Grams] | None = None) -> Any:
        """The pipeline's feature matrix (CSR, sorted indices) of `texts`."""
        grams = {} if grams is None else grams
        rows, columns, values = [], [], []
        for block in self.blocks:
            seen = grams.get(block.key)
            if seen is None:
                seen = grams[block.key] = _analyse(block.analyzer, texts)
            r, j, v = _block_entries(block, seen, len(texts))
            rows.append(r)
            columns.append(j + block.offset)
            values.append(v)
        r, j, v = np.concatenate(rows), np.concatenate(columns), np.concatenate(values)
        # Each block's entries are in row order already: a stable sort merges the blocks.
        # Within a row, entries stay unsorted by column (scores do not care; see _top_terms).
        order = np.argsort(r, kind="stable")
        indptr = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=len(texts)), out=indptr[1:])
        return sparse.csr_matrix((v[order], j[order], indptr), shape=(len(texts), self.n_features))

    # -- predictions ---------------------------------------------------------------------

    def scores(self, matrix: Any) -> np.ndarray:
        """Decision scores, one column per class (the pipeline's `decision_function`)."""
        return np.asarray(matrix @ self._weights_t) + self.intercept

    def predict(
        self, texts: Sequence[str], grams: dict[Any, _Grams] | None = None
    ) -> list[training.Prediction]:
        """What `training.predict` answers for these texts."""
        if len(texts) == 0:
            return []
        matrix = self.features(texts, grams)
        proba = self.calibrate(self.scores(matrix))
        best = proba.argmax(axis=1)
        top = _top_terms(matrix, self.weights, best, self.names)
        if proba.shape[1] > 1:
            top_two = np.partition(proba, -2, axis=1)[:, -2:]
            margins = top_two[:, 1] - top_two[:, 0]
        else:
            margins = np.ones(proba.shape[0])
        confidence = proba[np.arange(proba.shape[0]), best]
        return [
            training.Prediction(
                label=self.classes[b], confidence=float(c), top_terms=t, margin=float(m)
            )
            for b, c, t, m in zip(
                best.tolist(), confidence.tolist(), top, margins.tolist(), strict=True
            )
        ]


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _analyse(analyzer: Callable[[str], list[str]], texts: Sequence[str]) -> _Grams:
    counters = [Counter(analyzer(text or "")) for text in texts]
    lengths = np.fromiter(map(len, counters), dtype=np.int64, count=len(counters))
    total = int(lengths.sum())
    counts = np.fromiter(
        chain.from_iterable(counter.values() for counter in counters),
        dtype=np.float64,
        count=total,
    )
    return _Grams(counters=counters, rows=np.repeat(np.arange(len(texts)), lengths), counts=counts)


def _block_entries(
    block: _Block, grams: _Grams, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and TF-IDF values of one vectorizer's features (TfidfVectorizer.transform)."""
    total = grams.counts.size
    columns = np.fromiter(
        map(block.vocabulary.get, chain.from_iterable(grams.counters), repeat(-1)),
        dtype=np.int64,
        count=total,
    )
    known = columns >= 0
    rows, columns, values = grams.rows[known], columns[known], grams.counts[known]
    if block.binary:
        values = np.ones_like(values)
    if block.sublinear_tf:
        values = np.log(values) + 1.0
    if block.idf is not None:
        values = values * block.idf[columns]
    if block.norm == "l2":
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=n_rows))
    elif block.norm == "l1":
        norms = np.bincount(rows, weights=np.abs(values), minlength=n_rows)
    else:
        norms = None
    if norms is not None and values.size:
        values = values / norms[rows]
    return rows, columns, values


def _top_terms(
    matrix: Any, weights: np.ndarray, best: np.ndarray, names: np.ndarray
) -> list[list[str]]:
    """Up to TOP_TERMS features pushing each row towards its predicted class, strongest first."""
    top: list[list[str]] = [[] for _ in range(matrix.shape[0])]
    if not matrix.nnz:
        return top
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    contribution = matrix.data * weights[best[rows], matrix.indices]
    positive = contribution > 0
    rows, columns, contribution = rows[positive], matrix.indices[positive], contribution[positive]
    # Strongest first; equal contributions in column order, as in a matrix with sorted indices.
    order = np.lexsort((columns, -contribution, rows))
    starts = np.searchsorted(rows[order], np.arange(matrix.shape[0]))
    rank = np.arange(order.size) - starts[rows[order]]
    chosen = order[rank < training.TOP_TERMS]
    for row, term in zip(rows[chosen].tolist(), names[columns[chosen]].tolist(), strict=True):
        top[row].append(term)
    return top


# ------------------------------------------------------------------------------
# Compiling a pipeline
# ------------------------------------------------------------------------------


def _vectorizers(features: Any) -> list[TfidfVectorizer] | None:
    if type(features) is TfidfVectorizer:
        return [features]
    if type(features) is not FeatureUnion or features.transformer_weights:
        return None
    vectorizers = [vectorizer for _, vectorizer in features.transformer_list]
    if not all(type(vectorizer) is TfidfVectorizer for vectorizer in vectorizers):
        return None
    return vectorizers


def _linear_model(classifier: Any) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Class x feature weights, intercepts and temperature of a temperature-scaled linear SVM."""
    svm = getattr(classifier, "svm_", None)
    temperature = getattr(classifier, "temperature", None)
    coef = getattr(svm, "coef_", None)
    intercept = getattr(svm, "intercept_", None)
    if coef is None or intercept is None or not temperature:
        return None
    coef = np.asarray(coef.toarray() if sparse.issparse(coef) else coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64)
    n_classes = len(classifier.classes_)
    if coef.shape[0] == 1 and n_classes == 2:
        # Binary: one score for the second class; the first gets its mirror.
        coef, intercept = np.vstack([-coef[0], coef[0]]), np.r_[-intercept[0], intercept[0]]
    if coef.shape[0] != n_classes:
        return None
    return coef, intercept, float(temperature)


def _probes(model: TextModel) -> list[str]:
    """Texts made of the model's own n-grams (and none), to check the compiled scores on."""
    words = [str(name) for name in model.names[:: max(1, model.names.size // 60)] if str(name)]
    return ["", "zzzz qqqq", " ".join(words[:20]), " ".join(words[20:]), " ".join(words[::-1])]


def _compile(pipeline: Any) -> TextModel | None:
    if not isinstance(pipeline, Pipeline):
        return None
    steps = dict(pipeline.steps)
    vectorizers = _vectorizers(steps.get("features"))
    linear = _linear_model(steps.get("classifier"))
    if vectorizers is None or linear is None:
        return None
    blocks, names, offset = [], [], 0
    for vectorizer in vectorizers:
        params = vectorizer.get_params()
        if params["input"] != "content" or params["norm"] not in ("l1", "l2", None):
            return None
        key = tuple((name, repr(params[name])) for name in _ANALYSIS_PARAMS)
        blocks.append(
            _Block(
                key=key,
                analyzer=vectorizer.build_analyzer(),
                vocabulary=dict(vectorizer.vocabulary_),
                idf=np.asarray(vectorizer.idf_, dtype=np.float64) if params["use_idf"] else None,
                sublinear_tf=bool(params["sublinear_tf"]),
                binary=bool(params["binary"]),
                norm=params["norm"],
                offset=offset,
            )
        )
        block_names = np.asarray(vectorizer.get_feature_names_out(), dtype=object)
        names.append(block_names)
        offset += block_names.size
    weights, intercept, temperature = linear
    if weights.shape[1] != offset:
        return None
    model = TextModel(
        blocks=blocks,
        classes=[str(label) for label in pipeline.classes_],
        weights=weights,
        intercept=intercept,
        temperature=temperature,
        names=np.concatenate(names),
        calibrate=getattr(steps.get("classifier"), "proba_from_scores", None),
    )
    probes = _probes(model)
    expected_scores = np.asarray(pipeline.decision_function(probes), dtype=np.float64)
    if expected_scores.ndim == 1:
        expected_scores = np.column_stack([-expected_scores, expected_scores])
    scores = model.scores(model.features(probes))
    if scores.shape != expected_scores.shape or not np.allclose(
        scores, expected_scores, rtol=_TOLERANCE, atol=_TOLERANCE
    ):
        return None
    proba = model.calibrate(scores)
    if not np.allclose(proba, pipeline.predict_proba(probes), rtol=_TOLERANCE, atol=_TOLERANCE):
        return None
    return model


_MODELS: weakref.WeakKeyDictionary[Any, TextModel | None] = weakref.WeakKeyDictionary()


def text_model(pipeline: Any) -> TextModel | None:
    """The compiled form of a fitted pipeline (made once, kept as long as the pipeline is)."""
    try:
        return _MODELS[pipeline]
    except KeyError:
        pass
    model = _compile(pipeline)
    _MODELS[pipeline] = model
    return model


def predict_all(
    *, pipelines: Mapping[str, Any], texts: Sequence[str]
) -> dict[str, list[training.Prediction]]:
    """Each target's `training.predict` answers, tokenising each text once per analysis."""
    grams: dict[Any, _Grams] = {}
    predicted = {}
    for target, pipeline in pipelines.items():
        model = text_model(pipeline)
        if model is None:
            predicted[target] = training.predict(pipeline=pipeline, texts=texts)
        else:
            predicted[target] = model.predict(texts, grams)
    return predicted
