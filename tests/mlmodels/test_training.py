"""mlmodels.training on real IT tickets: metrics, determinism, gating, artifacts, explanations."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mlmodels import training

DATA = Path(__file__).resolve().parents[2] / "zenith" / "data" / "it_tickets_endava_sample.csv"
PARAMS = training.TrainingParams()


def load_tickets(*, sample: int | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    """(texts, category labels) of the whole CSV or of a seeded random sample of it."""
    with DATA.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if sample is not None:
        rows = random.Random(seed).sample(rows, sample)
    texts = [training.compose_text(title=row["title"], body=row["body"]) for row in rows]
    return texts, [row["category"] for row in rows]


@pytest.fixture(scope="module")
def tickets() -> tuple[list[str], list[str]]:
    return load_tickets(sample=600, seed=0)


@pytest.fixture(scope="module")
def result(tickets: tuple[list[str], list[str]]) -> training.TrainingResult:
    texts, labels = tickets
    return training.train_and_evaluate(texts=texts, labels=labels, params=PARAMS)


def vocabulary(pipeline: Pipeline) -> set[str]:
    features = pipeline.named_steps["features"]
    return {term for _, vec in features.transformer_list for term in vec.vocabulary_}


def small_data(n_per_class: dict[str, int]) -> tuple[list[str], list[str]]:
    """Distinct, learnable tickets: each class has its own vocabulary."""
    words = {
        "vpn": ["vpn", "tunnel", "remote", "connect"],
        "printer": ["printer", "toner", "paper", "jam"],
        "laptop": ["laptop", "screen", "battery", "charger"],
        "mail": ["mailbox", "outlook", "inbox", "quota"],
    }
    texts, labels = [], []
    for label, n in n_per_class.items():
        for i in range(n):
            vocab = words[label]
            texts.append(f"ticket {i} {vocab[i % 4]} {vocab[(i + 1) % 4]} problem please help")
            labels.append(label)
    return texts, labels


class Foreign(BaseEstimator, TransformerMixin):
    """A type no Zenith pipeline contains."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


def test_metrics_are_complete_sane_and_json(result: training.TrainingResult) -> None:
    metrics = result.metrics
    majority_share = Counter(result.test_labels).most_common(1)[0][1] / result.n_test
    assert metrics["accuracy"] > majority_share
    assert 0.0 < metrics["macro_f1"] <= 1.0
    assert 0.0 <= metrics["ece"] <= 1.0
    assert 0.0 <= metrics["coverage_at_95"] <= 1.0
    assert metrics["n_test"] == result.n_test == len(result.test_labels)
    assert result.n_train + result.n_test <= 600
    assert set(metrics["per_class"]) == set(result.labels) | set(result.test_labels)
    for scores in metrics["per_class"].values():
        assert set(scores) == {"precision", "recall", "f1", "support"}
    matrix = np.array(metrics["confusion_matrix"]["matrix"])
    assert metrics["confusion_matrix"]["labels"] == sorted(metrics["per_class"])
    assert matrix.sum() == result.n_test
    assert np.trace(matrix) / result.n_test == pytest.approx(metrics["accuracy"])
    assert json.loads(json.dumps(metrics)) == metrics


def test_rare_classes_are_dropped_and_reported(result: training.TrainingResult) -> None:
    counts = Counter(load_tickets(sample=600, seed=0)[1])
    rare = {label for label, n in counts.items() if n < PARAMS.min_class_examples}
    assert rare, "the 600-ticket sample is expected to contain rare categories"
    assert set(result.dropped_labels) == rare
    assert rare.isdisjoint(result.labels)
    assert result.labels == sorted(result.labels)


def test_held_out_tickets_can_score_another_model(
    tickets: tuple[list[str], list[str]], result: training.TrainingResult
) -> None:
    texts, labels = tickets
    assert [texts[i] for i in result.test_indices] == result.test_texts
    assert [labels[i] for i in result.test_indices] == result.test_labels
    held_out = set(result.test_indices)
    train = [i for i, label in enumerate(labels) if i not in held_out and label in result.labels]
    other = training.fit(
        texts=[texts[i] for i in train],
        labels=[labels[i] for i in train],
        params=dataclasses.replace(PARAMS, C=0.05, class_weight_power=0.0),
    )
    metrics = training.evaluate(pipeline=other, texts=result.test_texts, labels=result.test_labels)
    assert metrics["n_test"] == result.n_test
    assert metrics["per_class"].keys() == result.metrics["per_class"].keys()
    assert metrics["accuracy"] != result.metrics["accuracy"]


def test_same_seed_gives_identical_model(
    tickets: tuple[list[str], list[str]], result: training.TrainingResult
) -> None:
    texts, labels = tickets
    again = training.train_and_evaluate(texts=texts, labels=labels, params=PARAMS)
    assert again.test_indices == result.test_indices
    assert again.metrics == result.metrics
    assert np.array_equal(
        again.pipeline.predict_proba(result.test_texts),
        result.pipeline.predict_proba(result.test_texts),
    )


def test_different_data_gives_different_model(result: training.TrainingResult) -> None:
    texts, labels = load_tickets(sample=600, seed=1)
    other = training.train_and_evaluate(texts=texts, labels=labels, params=PARAMS)
    assert other.test_texts != result.test_texts
    probe = result.test_texts[:50]
    ours = training.predict(pipeline=result.pipeline, texts=probe)
    theirs = training.predict(pipeline=other.pipeline, texts=probe)
    assert [p.confidence for p in ours] != [p.confidence for p in theirs]
    assert other.metrics != result.metrics


def test_params_round_trip_through_json() -> None:
    params = training.TrainingParams(seed=7, C=0.5, grid_C=(0.2, 2.0), class_weight_power=0.5)
    assert training.TrainingParams(**json.loads(json.dumps(dataclasses.asdict(params)))) == params
    with pytest.raises(ValueError, match="test_size"):
        training.TrainingParams(test_size=1.5)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["a"] * 12, "not enough labels: 1 classes have at least 5 examples, need 2"),
        (["a"] * 6 + ["b"] * 6, "12 labelled tickets, need 30"),
        (["a"] * 40 + ["b"] * 4, "1 classes have at least 5 examples, need 2"),
        ([], "not enough labels: 0 classes"),
    ],
)
def test_readiness_refuses_too_few_labels(labels: list[str], expected: str) -> None:
    verdict = training.readiness(labels=labels)
    assert not verdict.ready
    assert expected in verdict.reason


def test_readiness_accepts_enough_labels_and_ignores_blanks() -> None:
    verdict = training.readiness(labels=["a"] * 20 + ["b"] * 10 + [""] * 50)
    assert verdict.ready
    assert "30 labelled tickets" in verdict.reason
    assert not training.readiness(labels=["a"] * 20 + [""] * 50 + ["b"] * 4).ready


def test_split_small_data_is_stratified_and_deterministic() -> None:
    texts, labels = small_data({"vpn": 18, "printer": 14, "laptop": 8})
    first = training.split(texts=texts, labels=labels, params=PARAMS)
    assert first == training.split(texts=texts, labels=labels, params=PARAMS)
    train_texts, test_texts, train_labels, test_labels = first
    assert set(train_labels) == set(test_labels) == {"vpn", "printer", "laptop"}
    assert len(test_texts) == 8  # ceil(0.2 * 40)
    assert set(train_texts).isdisjoint(test_texts)
    reseeded = training.split(
        texts=texts, labels=labels, params=dataclasses.replace(PARAMS, seed=1)
    )
    assert reseeded[1] != test_texts


def test_split_refuses_when_rare_classes_leave_one() -> None:
    texts, labels = small_data({"vpn": 30, "printer": 2})
    with pytest.raises(ValueError, match="not enough labels"):
        training.split(texts=texts, labels=labels, params=PARAMS)


def test_small_two_class_model_predicts_and_explains() -> None:
    texts, labels = small_data({"vpn": 20, "printer": 20})
    result = training.train_and_evaluate(texts=texts, labels=labels, params=PARAMS)
    assert result.metrics["accuracy"] == 1.0
    predictions = training.predict(
        pipeline=result.pipeline, texts=["vpn tunnel down", "printer toner empty"]
    )
    assert [p.label for p in predictions] == ["vpn", "printer"]
    assert "vpn" in predictions[0].top_terms
    assert "printer" in predictions[1].top_terms


def test_predict_gives_known_labels_probabilities_and_vocabulary_terms(
    result: training.TrainingResult,
) -> None:
    texts = [*result.test_texts[:40], "", "zzzz qqqq"]
    predictions = training.predict(pipeline=result.pipeline, texts=texts)
    assert len(predictions) == len(texts)
    proba = result.pipeline.predict_proba(texts)
    vocab = vocabulary(result.pipeline)
    for prediction, row in zip(predictions, proba, strict=True):
        assert prediction.label in result.labels
        assert 0.0 <= prediction.confidence <= 1.0
        assert prediction.confidence == pytest.approx(row.max())
        assert len(prediction.top_terms) <= 5
        assert all(isinstance(term, str) and term in vocab for term in prediction.top_terms)
    assert sum(bool(p.top_terms) for p in predictions[:40]) >= 38
    assert predictions[-2].top_terms == []
    assert training.predict(pipeline=result.pipeline, texts=[]) == []


def test_serialize_round_trip_predicts_identically(result: training.TrainingResult) -> None:
    data = training.serialize(pipeline=result.pipeline)
    assert training.sha256(data) == training.sha256(bytes(data))
    assert len(training.sha256(data)) == 64
    loaded = training.deserialize(data=data)
    assert np.array_equal(
        loaded.predict_proba(result.test_texts), result.pipeline.predict_proba(result.test_texts)
    )
    assert training.predict(pipeline=loaded, texts=result.test_texts[:20]) == training.predict(
        pipeline=result.pipeline, texts=result.test_texts[:20]
    )


def test_artifact_keeps_every_term_of_the_vocabulary_and_plain_vectorizers_still_load(
    result: training.TrainingResult,
) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    data = training.serialize(pipeline=result.pipeline)
    # The artifact holds the compact vectorizers; loading gives the plain ones serving expects.
    assert "mlmodels.training.TermsTfidfVectorizer" in sio.get_untrusted_types(data=data)
    loaded = training.deserialize(data=data)
    for (_, stored), (_, original) in zip(
        loaded.named_steps["features"].transformer_list,
        result.pipeline.named_steps["features"].transformer_list,
        strict=True,
    ):
        assert type(stored) is TfidfVectorizer
        assert type(original) is TfidfVectorizer
        assert stored.vocabulary_ == original.vocabulary_
        # Saving leaves the pipeline that was saved whole (the worker goes on serving it).
        assert original.get_feature_names_out().size == len(stored.vocabulary_) > 0
        assert np.array_equal(stored.idf_, original.idf_)
    # Artifacts written before kept plain TfidfVectorizers (vocabulary as a dict): still loaded.
    plain = [
        (name, TfidfVectorizer(**vectorizer.get_params()))
        for name, vectorizer in result.pipeline.named_steps["features"].transformer_list
    ]
    for (_, vectorizer), (_, original) in zip(
        plain, result.pipeline.named_steps["features"].transformer_list, strict=True
    ):
        vectorizer.vocabulary_, vectorizer.idf_ = original.vocabulary_, original.idf_
    older = Pipeline(
        [
            ("features", FeatureUnion(plain)),
            ("classifier", result.pipeline.named_steps["classifier"]),
        ]
    )
    reloaded = training.deserialize(data=sio.dumps(older))
    assert np.array_equal(
        reloaded.predict_proba(result.test_texts), result.pipeline.predict_proba(result.test_texts)
    )


class _Touch:
    """Unpickling this creates a file: proof that a pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickle_bytes_are_refused_without_running_them(
    tmp_path: Path, result: training.TrainingResult
) -> None:
    marker = tmp_path / "executed"
    with pytest.raises(training.UntrustedArtifactError, match="pickle"):
        training.deserialize(data=pickle.dumps(_Touch(marker)))
    assert not marker.exists()
    with pytest.raises(ValueError, match="pickle"):
        training.deserialize(data=pickle.dumps(result.pipeline))
    with pytest.raises(training.UntrustedArtifactError, match="not a skops"):
        training.deserialize(data=b"hello")


def test_foreign_types_are_refused_by_name() -> None:
    data = sio.dumps(Pipeline([("features", Foreign()), ("classifier", LogisticRegression())]))
    with pytest.raises(training.UntrustedArtifactError, match="Foreign") as caught:
        training.deserialize(data=data)
    assert any(name.endswith("Foreign") for name in caught.value.types)
    with pytest.raises(training.UntrustedArtifactError, match="expected a Pipeline"):
        training.deserialize(data=sio.dumps(LogisticRegression()))


def test_library_versions_name_the_artifact_dependencies() -> None:
    versions = training.library_versions()
    assert {"sklearn", "numpy", "scipy", "skops"} <= set(versions)
    assert all(isinstance(v, str) and v[0].isdigit() for v in versions.values())


def test_fold_tfidf_equals_tfidf_vectorizers_fitted_on_the_same_rows(
    tickets: tuple[list[str], list[str]],
) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    texts = [*tickets[0][:300], ""]
    for min_df in (1, 2):
        params = dataclasses.replace(PARAMS, min_df=min_df)
        counts = training.TextCounts(texts=texts, params=params)
        fold = counts.fold_features().fit(counts.matrix[:200])
        reference = FeatureUnion(
            [
                ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=min_df)),
                (
                    "char",
                    TfidfVectorizer(
                        analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=min_df
                    ),
                ),
            ]
        ).fit(texts[:200])
        expected = reference.transform(texts[200:])
        # Unseen n-grams of the other rows are dropped, as the vectorizer drops them.
        assert abs(fold.transform(counts.matrix[200:]) - expected).max() < 1e-12
        assert abs(counts.text_features(fold).transform(texts[200:]) - expected).max() < 1e-12


def test_text_counts_are_scikit_learns_counts_on_awkward_texts(
    tickets: tuple[list[str], list[str]],
) -> None:
    from sklearn.feature_extraction.text import CountVectorizer

    texts = [
        *tickets[0][:200],
        "",
        "I",
        "a b",
        "ÉCRAN  noir\tsur\nle Poste\u00a0n°3 — SAP/ERP",
        "VPN vpn VPN-vpn",
        "x" * 40,
    ]
    counts = training.TextCounts(texts=texts, params=PARAMS)
    reference = CountVectorizer(analyzer="char_wb", ngram_range=(2, 5), dtype=np.float64)
    expected = reference.fit_transform(texts)
    char = counts.matrix[:, counts.n_word :]
    assert list(counts.char.get_feature_names_out()) == list(reference.get_feature_names_out())
    # Same entries in the same order: every figure computed from them is bitwise the same.
    assert np.array_equal(char.indptr, expected.indptr)
    assert np.array_equal(char.indices, expected.indices)
    assert np.array_equal(char.data, expected.data)


def test_out_of_fold_scores_come_from_the_grid_and_equal_a_fresh_cross_validation() -> None:
    # "mail" has 1 ticket: the fold that tests it never trained on it, which scores -inf there.
    texts, labels = small_data({"vpn": 14, "printer": 12, "laptop": 10, "mail": 1})
    counts = training.TextCounts(texts=texts, params=PARAMS)
    rows = list(range(len(texts)))
    record, (classes, encoded, scores) = training._select(
        counts=counts, rows=rows, labels=labels, params=PARAMS
    )
    chosen = training._configured(PARAMS, record["chosen"])
    expected = training._oof_scores(
        pipeline=training._count_pipeline(counts=counts, params=chosen),
        X=counts.matrix,
        labels=labels,
        folds=training._folds(labels=labels, params=PARAMS),
        n_jobs=1,
    )
    assert list(classes) == list(expected[0])
    assert np.array_equal(encoded, expected[1])
    assert np.array_equal(scores, expected[2])
    assert np.isinf(scores).any()
    # The cached grid scores every candidate as a plain GridSearchCV over the counts does
    # (TF-IDF refitted for every candidate and fold, scikit-learn's scorers).
    from sklearn.model_selection import GridSearchCV

    plain = GridSearchCV(
        training._count_pipeline(counts=counts, params=PARAMS),
        {"classifier__class_weight_power": [0.0, 0.5, 1.0], "classifier__C": [0.1, 0.3, 1.0]},
        scoring=training.SELECTION_SCORERS,
        refit=False,
        cv=training._folds(labels=labels, params=PARAMS),
    ).fit(counts.matrix, np.asarray(labels, dtype=object))
    for i, candidate in enumerate(record["candidates"]):
        assert candidate["C"] == plain.cv_results_["params"][i]["classifier__C"]
        for name in ("objective", "accuracy", "macro_f1"):
            assert candidate[f"{name}_mean"] == round(
                float(plain.cv_results_[f"mean_test_{name}"][i]), 4
            )


def test_selection_records_the_grid_every_candidate_and_the_choice(
    result: training.TrainingResult,
) -> None:
    selection = result.selection
    assert selection["grid"] == {"class_weight_power": [0.0, 0.5, 1.0], "C": [0.1, 0.3, 1.0]}
    assert len(selection["candidates"]) == 9
    best = max(selection["candidates"], key=lambda c: c["objective_mean"])
    assert selection["chosen_objective"] == best["objective_mean"]
    for candidate in selection["candidates"]:
        assert candidate["objective_mean"] == pytest.approx(
            (candidate["accuracy_mean"] + candidate["macro_f1_mean"]) / 2, abs=2e-4
        )
    assert selection["temperature"] > 0
    classifier = result.pipeline.named_steps["classifier"]
    assert (classifier.C, classifier.class_weight_power) == (
        selection["chosen"]["C"],
        selection["chosen"]["class_weight_power"],
    )
    assert json.loads(json.dumps(selection)) == selection


def test_shipped_model_learns_every_label_and_temperature_keeps_the_svm_label(
    result: training.TrainingResult,
) -> None:
    assert result.n_shipped == result.n_train + result.n_test
    assert vocabulary(result.holdout_pipeline) < vocabulary(result.pipeline)
    classifier = result.pipeline.named_steps["classifier"]
    features = result.pipeline.named_steps["features"].transform(result.test_texts)
    svm_labels = classifier.classes_[classifier.svm_.predict(features)]
    predictions = training.predict(pipeline=result.pipeline, texts=result.test_texts)
    assert [p.label for p in predictions] == list(svm_labels)
    for prediction in predictions:
        assert 0.0 <= prediction.margin <= prediction.confidence
    assert set(result.metrics["cv"]["per_class"]) >= set(result.labels)


def test_a_class_of_three_is_trained_and_predicted() -> None:
    texts, labels = small_data({"vpn": 20, "printer": 20, "laptop": 3})
    result = training.train_and_evaluate(texts=texts, labels=labels, params=PARAMS)
    assert "laptop" in result.labels
    assert result.dropped_labels == {}
    assert result.metrics["cv"]["per_class"]["laptop"]["support"] >= 2
    [prediction] = training.predict(pipeline=result.pipeline, texts=["laptop screen battery"])
    assert prediction.label == "laptop"


def test_confidence_calibration_never_moves_the_label_and_old_artifacts_still_answer(
    result: training.TrainingResult,
) -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2000, 5)) * rng.uniform(0.01, 3, size=(2000, 1))
    proba = training._calibrated_proba(scores, temperature=0.3, margin_scale=4.0, margin_shift=-3.0)
    assert (proba.argmax(axis=1) == scores.argmax(axis=1)).all()
    assert np.allclose(proba.sum(axis=1), 1.0)
    # A sure margin gives a high confidence, a torn one a low one.
    margin = training._top_two_margin(scores)
    assert proba.max(axis=1)[margin > 1.5].min() > proba.max(axis=1)[margin < 0.05].max()
    # One slope and intercept per class the shipped model knows, recorded on the selection.
    confidence = result.selection["confidence"]
    assert confidence["classes"] == result.labels
    assert np.mean(confidence["margin_scale"]) > 0
    pipeline = copy.deepcopy(result.pipeline)
    classifier = pipeline.named_steps["classifier"]
    assert classifier.margin_scale == pytest.approx(confidence["margin_scale"], abs=1e-6)
    assert classifier.margin_shift == pytest.approx(confidence["margin_shift"], abs=1e-6)
    # A version trained before margin calibration has no such attributes: plain softmax(s / T).
    del classifier.margin_scale, classifier.margin_shift
    [old] = training.predict(pipeline=pipeline, texts=result.test_texts[:1])
    features = pipeline.named_steps["features"].transform(result.test_texts[:1])
    expected = training._softmax(classifier.decision_function(features) / classifier.temperature)
    assert old.confidence == pytest.approx(float(expected.max()))


def test_a_bare_temperature_fit_answers_softmax_probabilities() -> None:
    texts, labels = small_data({"vpn": 20, "printer": 20})
    counts = training.TextCounts(texts=texts, params=PARAMS)
    pipeline = training._fit_rows(
        counts=counts, rows=range(len(texts)), labels=labels, params=PARAMS, temperature=2.0
    )
    features = counts.matrix[:5]
    scores = pipeline.named_steps["classifier"].decision_function(
        pipeline.named_steps["features"].transform(features)
    )
    assert np.allclose(pipeline.predict_proba(features), training._softmax(scores / 2.0))
