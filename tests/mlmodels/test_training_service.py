"""Training through the registry: versions, metrics, artifacts, readiness and reproducibility."""

from __future__ import annotations

from collections import Counter

import pytest
from django.core.files.storage import default_storage

from mlmodels import registry, services, training
from mlmodels.models import ModelStatus, ModelVersion
from mlmodels.tasks import train_organization_model_task
from tests.mlmodels.conftest import sample_rows
from tests.tickets.factories import OrganizationFactory, TicketFactory
from tickets.models import LabelSource

pytestmark = pytest.mark.django_db


def test_training_records_an_active_version_with_sane_metrics(organization, import_sample):
    import_sample(organization, n=400)

    outcome = services.model_train(organization=organization, target="category", task_id="t-1")

    version = outcome.version
    assert outcome.status == ModelStatus.ACTIVE
    assert (version.version, version.status, version.trained_by_task_id) == (1, "active", "t-1")
    metrics = version.metrics
    majority = Counter(row["category"] for row in sample_rows(400)).most_common(1)[0][1] / 400
    assert majority < metrics["accuracy"] <= 1.0, "better than always answering the majority class"
    assert 0.0 < metrics["macro_f1"] <= 1.0
    assert 0.0 <= metrics["ece"] <= 0.2
    assert 0.0 < metrics["coverage_at_95"] <= 1.0
    assert set(metrics["per_class"]) >= set(version.labels)
    matrix = metrics["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == version.n_test == len(version.test_ticket_ids)
    assert version.training_set_size == 400 == sum(version.label_counts.values())
    assert version.n_train + version.n_test + sum(metrics["dropped_labels"].values()) == 400
    assert version.library_versions["sklearn"]
    assert version.params["seed"] == 0
    # The artifact is in storage, and its recorded hash is the hash of what is stored.
    with default_storage.open(version.artifact.name, "rb") as handle:
        data = handle.read()
    assert training.sha256(data) == version.artifact_sha256
    assert len(data) == version.artifact_size


def test_same_seed_and_labels_give_the_same_model(import_sample):
    first, second = OrganizationFactory(slug="first"), OrganizationFactory(slug="second")
    import_sample(first, n=300)
    import_sample(second, n=300)

    a = services.model_train(organization=first, target="category").version
    b = services.model_train(organization=second, target="category").version

    assert a.metrics == b.metrics
    texts = [f"{row['title']} {row['body']}" for row in sample_rows(50, seed=7)]
    pa = training.predict(pipeline=registry.model_load(version=a), texts=texts)
    registry.cache_clear()
    pb = training.predict(pipeline=registry.model_load(version=b), texts=texts)
    assert [(p.label, round(p.confidence, 10)) for p in pa] == [
        (p.label, round(p.confidence, 10)) for p in pb
    ]


def test_too_few_labels_ends_with_not_enough_labels(organization):
    for i in range(20):
        TicketFactory(
            organization=organization,
            category="4" if i % 2 else "5",
            category_source=LabelSource.IMPORT,
        )

    result = train_organization_model_task.apply(kwargs={"organization_id": organization.pk}).get()

    category = result["results"]["category"]
    assert category["status"] == "not_enough_labels"
    assert category["reason"].startswith("not enough labels: ")
    assert "20 labelled tickets, need 30" in category["reason"]
    assert result["results"]["priority"]["status"] == "not_enough_labels"
    assert not ModelVersion.objects.exists()


def test_one_class_is_not_enough_however_many_labels(organization):
    for _ in range(40):
        TicketFactory(organization=organization, category="4", category_source=LabelSource.IMPORT)
    # ZENITH_ML_MIN_CLASS_EXAMPLES (3): a class of two is not trained, so one class is left.
    for _ in range(2):
        TicketFactory(organization=organization, category="5", category_source=LabelSource.IMPORT)

    outcome = services.model_train(organization=organization, target="category")

    assert outcome.status == "not_enough_labels"
    assert "1 classes have at least 3 examples, need 2" in outcome.reason


def test_model_labels_are_not_training_labels(organization, import_sample):
    import_sample(organization, n=200)
    TicketFactory.create_batch(
        30, organization=organization, category="99", category_source=LabelSource.MODEL
    )

    version = services.model_train(organization=organization, target="category").version

    assert "99" not in version.label_counts
    assert version.training_set_size == 200


def test_a_redelivered_training_task_reuses_its_version(organization, import_sample):
    import_sample(organization, n=200)

    first = train_organization_model_task.apply(
        kwargs={"organization_id": organization.pk, "targets": ["category"]}, task_id="same-id"
    ).get()
    # A second copy of the finished task's message does nothing (the ledger's guard)...
    copy = train_organization_model_task.apply(
        kwargs={"organization_id": organization.pk, "targets": ["category"]}, task_id="same-id"
    ).get()
    assert copy is None
    # ...and a delivery that does run again (its worker died mid-training) reuses the version.
    again = services.organization_models_train(
        organization=organization, targets=["category"], task_id="same-id"
    )

    assert ModelVersion.objects.filter(organization=organization).count() == 1
    assert (
        first["results"]["category"]["model_version_id"] == again[0].as_dict()["model_version_id"]
    )


def test_a_failed_training_is_recorded(organization, import_sample, settings, tmp_path):
    import_sample(organization, n=200)
    # Storage that cannot take the artifact: the media root is a file, not a folder.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    settings.MEDIA_ROOT = str(blocker)

    with pytest.raises(OSError):  # noqa: PT011 - whichever OSError the filesystem raises
        services.model_train(organization=organization, target="category")

    version = ModelVersion.objects.get(organization=organization)
    assert version.status == ModelStatus.FAILED
    assert "Error" in version.error
    assert not ModelVersion.objects.filter(status=ModelStatus.ACTIVE).exists()
