"""Serving predictions (mlmodels.inference) answer what training.predict answers, faster."""

from __future__ import annotations

import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from mlmodels import inference, training
from tests.mlmodels.test_training import PARAMS, load_tickets


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Pipeline]:
    """A multi-class and a binary model of the same texts (different vocabularies)."""
    texts, labels = load_tickets(sample=500, seed=3)
    binary = ["4" if label == "4" else "other" for label in labels]
    return {
        "category": training.fit(texts=texts, labels=labels, params=PARAMS),
        "binary": training.fit(texts=texts[:300], labels=binary[:300], params=PARAMS),
    }


def assert_same(got: list[training.Prediction], want: list[training.Prediction]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.label == b.label
        assert a.confidence == pytest.approx(b.confidence, abs=1e-9)
        assert a.margin == pytest.approx(b.margin, abs=1e-9)
        assert a.top_terms == b.top_terms


def test_every_target_gets_the_labels_confidence_and_top_terms_of_training_predict(pipelines):
    texts, _ = load_tickets(sample=400, seed=11)
    texts += ["", "zzzz qqqq", "VPN!!! vpn... Vpn"]

    predicted = inference.predict_all(pipelines=pipelines, texts=texts)

    assert all(inference.text_model(p) is not None for p in pipelines.values())
    for target, pipeline in pipelines.items():
        assert_same(predicted[target], training.predict(pipeline=pipeline, texts=texts))


def test_one_text_at_a_time_gives_the_same_answers_as_a_batch(pipelines):
    texts, _ = load_tickets(sample=30, seed=12)

    batch = inference.predict_all(pipelines=pipelines, texts=texts)
    one_by_one = [inference.predict_all(pipelines=pipelines, texts=[text]) for text in texts]

    for target in pipelines:
        assert_same([answer[target][0] for answer in one_by_one], batch[target])


def test_a_pipeline_of_another_shape_is_served_by_training_predict():
    texts, labels = load_tickets(sample=200, seed=4)
    other = Pipeline(
        [
            ("features", FeatureUnion([("word", TfidfVectorizer())])),
            ("classifier", LogisticRegression(max_iter=200)),
        ]
    ).fit(texts, labels)

    predicted = inference.predict_all(pipelines={"category": other}, texts=texts[:20])

    assert inference.text_model(other) is None
    assert_same(predicted["category"], training.predict(pipeline=other, texts=texts[:20]))
