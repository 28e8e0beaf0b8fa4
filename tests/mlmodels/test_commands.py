"""The commands a person runs: import_tickets, train_models, classify_tickets, evaluate_model."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from mlmodels.models import ModelVersion, Prediction
from tests.mlmodels.conftest import sample_rows, write_csv
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
