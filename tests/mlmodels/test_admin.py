"""The admin pages: readable metrics, promotion and roll back actions, predictions on the ticket."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mlmodels import services
from mlmodels.models import ModelStatus, ModelVersion
from tests.mlmodels.conftest import unlabelled_tickets

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(organization, import_sample):
    import_sample(organization, n=300)
    v1 = services.model_train(organization=organization, target="category").version
    v2 = services.model_train(organization=organization, target="category").version
    services.model_activate(version=v2)
    return v1, v2


def test_version_page_shows_metrics_and_a_coloured_confusion_matrix(admin_client, versions):
    v1, _ = versions
    page = admin_client.get(reverse("admin:mlmodels_modelversion_change", args=[v1.pk]))

    html = page.content.decode()
    assert page.status_code == 200
    assert "true \\ predicted" in html
    assert "background:rgba(26,127,55," in html  # correct predictions in green
    assert f"accuracy <b>{100 * v1.metrics['accuracy']:.1f} %</b>" in html
    for label in v1.metrics["per_class"]:
        assert f">{label}</th>" in html


def test_changelist_lists_versions_with_scores(admin_client, versions):
    page = admin_client.get(reverse("admin:mlmodels_modelversion_changelist") + "?status=active")

    assert page.status_code == 200
    assert f"{versions[1].macro_f1:.3f}" in page.content.decode()


def test_admin_actions_roll_back_and_promote(admin_client, versions):
    v1, v2 = versions
    url = reverse("admin:mlmodels_modelversion_changelist")

    admin_client.post(url, {"action": "roll_back", "_selected_action": [v2.pk]}, follow=True)
    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.status, v2.status) == (ModelStatus.ACTIVE, ModelStatus.RETIRED)

    page = admin_client.post(
        url, {"action": "activate_versions", "_selected_action": [v2.pk]}, follow=True
    )
    v2.refresh_from_db()
    assert v2.status == ModelStatus.ACTIVE
    assert "category v2 is active" in page.content.decode()


def test_ticket_page_shows_its_predictions(admin_client, organization, versions):
    ticket = unlabelled_tickets(organization, 1)[0]
    services.ticket_classify(ticket=ticket)
    prediction = ticket.predictions.get()

    page = admin_client.get(reverse("admin:tickets_ticket_change", args=[ticket.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert "Predictions" in html
    assert str(prediction.model_version) in html
    assert ModelVersion.objects.filter(status="active").count() == 1
