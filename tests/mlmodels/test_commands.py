"""The commands a person runs: import_tickets, train_models, classify_tickets, evaluate_model."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from mlmodels.models import ModelVersion, Prediction
from tests.mlmodels.conftest import sample_rows, write_csv
from tickets.demo import DEMO_DATASET
from tickets.models import Ticket

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def import_file(path, slug: str) -> str:
    return run(
        "import_tickets",
        str(path),
        "--org",
        slug,
        "--text",
        "title,body",
        "--label",
        "category=category",
        "--label",
        "priority=urgency",
    )


def test_train_classify_and_evaluate_through_the_commands(tmp_path):
    import_file(write_csv(tmp_path / "sample.csv", sample_rows(300)), "sample")
    unlabelled = Ticket.objects.filter(organization__slug="sample").order_by("id")[:10]
    Ticket.objects.filter(pk__in=list(unlabelled.values_list("pk", flat=True))).update(
        category="", category_source=""
    )

    trained = run("train_models", "--org", "sample")
    classified = run("classify_tickets", "--org", "sample")
    table = run("evaluate_model", "--org", "sample", "--target", "category")
    report = json.loads(run("evaluate_model", "--org", "sample", "--json"))

    assert "category: training v1 on 290 labelled tickets" in trained
    assert "category: v1 active" in trained
    assert "priority: v1 active" in trained
    assert "300 tickets classified with category v1, priority v1: 10 labels set" in classified
    assert "macro-F1" in table
    assert "confusion" in table
    version = ModelVersion.objects.get(organization__slug="sample", target="category")
    assert f"{version.metrics['accuracy']:.3f}" in table
    assert report["category"]["metrics"]["macro_f1"] == version.metrics["macro_f1"]
    assert report["priority"]["version"] == 1
    assert Prediction.objects.filter(ticket__organization__slug="sample").count() == 600
    # A second run has nothing left to classify, or to train on.
    assert "0 tickets classified" in run("classify_tickets", "--org", "sample")
    again = run("train_models", "--org", "sample")
    assert "category: no new labels since the last training (--force retrains)" in again
    assert ModelVersion.objects.filter(organization__slug="sample").count() == 2
    forced = run("train_models", "--org", "sample", "--target", "category", "--force")
    assert "category: training v2 on 290 labelled tickets" in forced


def test_not_enough_labels_is_reported_not_raised(tmp_path):
    import_file(write_csv(tmp_path / "tiny.csv", sample_rows(12)), "tiny")

    output = run("train_models", "--org", "tiny")

    assert "category: not enough labels: " in output
    assert not ModelVersion.objects.exists()
    with pytest.raises(CommandError, match="no active category or priority model"):
        run("evaluate_model", "--org", "tiny")


def test_unknown_organization_is_an_error():
    with pytest.raises(CommandError, match="no organization with slug 'nope'"):
        run("train_models", "--org", "nope")
    with pytest.raises(CommandError, match="no organization with slug 'nope'"):
        run("evaluate_model", "--org", "nope")


@pytest.mark.django_db(transaction=True)
def test_async_commands_enqueue_and_print_the_task_id(organization, published):
    trained = run("train_models", "--org", "acme", "--async")
    classified = run("classify_tickets", "--org", "acme", "--async")

    train, classify = published
    assert train["name"] == "mlmodels.tasks.train_organization_model_task"
    assert train["headers"]["id"] in trained
    assert classify["name"] == "mlmodels.tasks.batch_classify_tickets_task"
    assert classify["kwargs"] == {"organization_id": organization.pk}
    assert classify["headers"]["id"] in classified


@pytest.mark.slow
def test_quality_bar_on_the_shared_dataset(capsys):
    """Category on the whole dataset, stratified 80/20 with seed 0, through the project's path."""
    import_file(DEMO_DATASET, "endava")
    run("train_models", "--org", "endava", "--target", "category")
    run("classify_tickets", "--org", "endava")
    metrics = json.loads(
        run("evaluate_model", "--org", "endava", "--json", "--target", "category")
    )["category"]["metrics"]

    with capsys.disabled():
        print(
            f"\nquality bar (category, {metrics['n_test']} held-out tickets): "
            f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
            f"ECE {metrics['ece']:.3f}, coverage at 95 % precision {metrics['coverage_at_95']:.3f} "
            f"(confidence >= {metrics['threshold_at_95']:.3f})"
        )
    assert metrics["accuracy"] >= 0.85
    assert metrics["macro_f1"] >= 0.60
    assert metrics["ece"] <= 0.05
    assert metrics["coverage_at_95"] >= 0.65

    # The stored predictions on the held-out tickets tell the same story.
    version = ModelVersion.objects.get(organization__slug="endava", target="category")
    held_out = list(
        Prediction.objects.filter(
            model_version=version, ticket_id__in=version.test_ticket_ids
        ).values_list("label", "confidence", "ticket__category")
    )
    assert len(held_out) == version.n_test == metrics["n_test"]
    correct = [label == truth for label, _, truth in held_out]
    assert sum(correct) / len(held_out) == pytest.approx(metrics["accuracy"], abs=1e-9)
    answered = [
        ok
        for (_, confidence, _), ok in zip(held_out, correct, strict=True)
        if confidence >= metrics["threshold_at_95"]
    ]
    assert len(answered) / len(held_out) >= 0.65
    assert sum(answered) / len(answered) >= 0.95
