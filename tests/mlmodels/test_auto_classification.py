"""New tickets are classified after commit: one task per ticket, one batch task per bulk import."""

from __future__ import annotations

import pytest

from mlmodels import services
from mlmodels.models import ModelVersion, Prediction
from mlmodels.tasks import train_all_organizations_task, train_organization_model_task
from tests.mlmodels.conftest import wait_until
from tests.tickets.factories import OrganizationFactory
from tickets.models import Ticket

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_import_without_an_active_model_enqueues_nothing(organization, import_sample, published):
    import_sample(organization, n=600)

    assert Ticket.objects.filter(organization=organization).count() == 600
    assert not published


def test_a_bulk_import_is_classified_by_one_batch_task_on_a_worker(
    organization, import_sample, published, processes, worker_env, monkeypatch
):
    monkeypatch.setattr(services.auto_classification, "BATCH_COALESCE_SECONDS", 5)
    import_sample(organization, n=200, seed=0)
    services.organization_models_train(organization=organization)
    services.batch_pending_clear(organization_id=organization.pk)
    published.clear()

    report = import_sample(organization, n=1200, seed=3)  # three import batches, three signals

    new = report.created
    assert new > 1000
    assert [(m["name"], m["kwargs"]) for m in published] == [
        ("mlmodels.tasks.batch_classify_tickets_task", {"organization_id": organization.pk})
    ]
    processes.worker(worker_type="ml", concurrency=1, env=worker_env)
    total = Ticket.objects.filter(organization=organization).count()
    wait_until(
        lambda: Prediction.objects.filter(ticket__organization=organization).count() == 2 * total,
        timeout=120,
    )
    # Imported labels stay human labels.
    assert not Ticket.objects.filter(organization=organization, category_source="model").exists()


def test_train_all_trains_only_organizations_with_new_labels(
    organization, import_sample, published, api_client
):
    quiet = OrganizationFactory(slug="quiet")
    fresh = OrganizationFactory(slug="fresh")
    OrganizationFactory(slug="empty")
    import_sample(organization, n=200)
    import_sample(quiet, n=200)
    import_sample(fresh, n=200)
    services.organization_models_train(organization=organization)
    services.organization_models_train(organization=quiet)
    # A person corrects one of acme's labels: acme has a new category label.
    ticket = Ticket.objects.filter(organization=organization).first()
    assert (
        api_client.patch(
            f"/api/v1/tickets/{ticket.pk}", {"category": "11"}, format="json"
        ).status_code
        == 200
    )
    published.clear()

    result = train_all_organizations_task.apply().get()

    enqueued = {row["organization_id"]: row["targets"] for row in result["enqueued"]}
    assert enqueued == {organization.pk: ["category"], fresh.pk: ["category", "priority"]}
    assert sorted(m["kwargs"]["organization_id"] for m in published) == sorted(enqueued)
    assert all(m["name"] == "mlmodels.tasks.train_organization_model_task" for m in published)

    # Running the scheduled training twice trains once.
    kwargs = {"organization_id": organization.pk, "targets": ["category"], "only_changed": True}
    train_organization_model_task.apply(kwargs=kwargs).get()
    second = train_organization_model_task.apply(kwargs=kwargs).get()
    assert second["results"] == {}
    assert ModelVersion.objects.filter(organization=organization, target="category").count() == 2
