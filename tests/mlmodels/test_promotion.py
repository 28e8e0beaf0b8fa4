"""The promotion gate and manual activation: never serve a worse model unless a person says so."""

from __future__ import annotations

import random

import pytest

from mlmodels import services
from mlmodels.models import ModelStatus, ModelVersion, Prediction
from tests.tickets.factories import TicketFactory
from tickets.models import Role, Ticket

pytestmark = pytest.mark.django_db


def _shuffle_training_labels(version: ModelVersion) -> None:
    """Scramble the labels of every ticket the active model may train on (not its held-out ones)."""
    tickets = list(
        Ticket.objects.filter(organization_id=version.organization_id)
        .exclude(pk__in=version.test_ticket_ids)
        .order_by("id")
    )
    labels = [ticket.category for ticket in tickets]
    random.Random(1).shuffle(labels)
    for ticket, label in zip(tickets, labels, strict=True):
        ticket.category = label
    Ticket.objects.bulk_update(tickets, ["category"])


def test_a_model_trained_on_shuffled_labels_is_rejected(organization, import_sample):
    import_sample(organization, n=500)
    good = services.model_train(organization=organization, target="category").version
    _shuffle_training_labels(good)

    outcome = services.model_train(organization=organization, target="category")

    bad = outcome.version
    assert outcome.status == bad.status == ModelStatus.REJECTED
    good.refresh_from_db()
    assert good.status == ModelStatus.ACTIVE
    gate = bad.comparison
    assert gate["decision"].startswith("rejected")
    assert gate["active_version"] == good.version
    assert gate["candidate_macro_f1"] < gate["active_macro_f1"] - services.PROMOTION_TOLERANCE
    # Both were scored on the same held-out tickets, the ones the active model never saw.
    assert set(bad.test_ticket_ids) == set(good.test_ticket_ids)
    assert gate["n_test"] == bad.n_test


def test_a_retrained_model_at_least_as_good_replaces_the_active_one(organization, import_sample):
    import_sample(organization, n=300, seed=0)
    first = services.model_train(organization=organization, target="category").version
    import_sample(organization, n=300, seed=5)  # more labelled tickets (partly new ones)

    second = services.model_train(organization=organization, target="category").version

    first.refresh_from_db()
    gate = second.comparison
    if gate["candidate_macro_f1"] >= gate["active_macro_f1"] - services.PROMOTION_TOLERANCE:
        assert (first.status, second.status) == (ModelStatus.RETIRED, ModelStatus.ACTIVE)
    else:
        assert (first.status, second.status) == (ModelStatus.ACTIVE, ModelStatus.REJECTED)
    assert second.training_set_size > first.training_set_size
    # The old held-out tickets stay held out; new tickets add to them.
    assert set(first.test_ticket_ids) <= set(second.test_ticket_ids)
    assert len(second.test_ticket_ids) > len(first.test_ticket_ids)


def test_manual_activation_and_roll_back(organization, import_sample, make_user, make_api_client):
    import_sample(organization, n=300)
    v1 = services.model_train(organization=organization, target="category").version
    v2 = services.model_train(organization=organization, target="category").version
    admin = make_api_client(make_user(organization=organization, role=Role.ADMIN))

    # Whatever the gate decided about v2, a person can make it serve...
    response = admin.post(f"/api/v1/models/{v2.pk}/activate")
    assert response.status_code == 200
    assert response.data["status"] == "active"
    v1.refresh_from_db()
    assert v1.status == ModelStatus.RETIRED

    # ...and roll back to v1; new predictions then name v1.
    response = admin.post(f"/api/v1/models/{v1.pk}/activate/")
    assert response.status_code == 200
    v2.refresh_from_db()
    assert (v2.status, response.data["status"]) == (ModelStatus.RETIRED, "active")
    ticket = TicketFactory(organization=organization)
    services.ticket_classify(ticket=ticket)
    assert Prediction.objects.get(ticket=ticket, target="category").model_version_id == v1.pk
    assert ModelVersion.objects.filter(organization=organization, status="active").count() == 1


def test_roll_back_service_serves_the_previously_active_version(organization, import_sample):
    import_sample(organization, n=300)
    v1 = services.model_train(organization=organization, target="category").version
    v2 = services.model_train(organization=organization, target="category").version
    services.model_activate(version=v2)

    back = services.model_rollback(organization=organization, target="category")

    assert back.pk == v1.pk
    assert back.status == ModelStatus.ACTIVE
    v2.refresh_from_db()
    assert v2.status == ModelStatus.RETIRED


def test_activation_needs_the_admin_role_and_a_servable_version(
    organization, import_sample, user, api_client, make_user, make_api_client
):
    import_sample(organization, n=200)
    version = services.model_train(organization=organization, target="category").version
    failed = ModelVersion.objects.create(
        organization=organization, target="category", version=9, status=ModelStatus.FAILED
    )
    admin = make_api_client(make_user(organization=organization, role=Role.ADMIN))

    assert api_client.post(f"/api/v1/models/{version.pk}/activate").status_code == 403  # operator
    response = admin.post(f"/api/v1/models/{failed.pk}/activate")
    assert response.status_code == 409
    assert "failed" in response.data["detail"]
    version.refresh_from_db()
    assert version.status == ModelStatus.ACTIVE
