"""Classification: predictions per version, labels only where no person set one, review flags."""

from __future__ import annotations

import json

import pytest
from django.db.models import Count
from django_celery_results.models import TaskResult
from rest_framework.renderers import JSONRenderer

from mlmodels import registry, services, training
from mlmodels.models import ModelVersion, Prediction
from mlmodels.receivers import ticket_prediction_fields
from mlmodels.tasks import batch_classify_tickets_task, classify_ticket_task
from tests.mlmodels.conftest import unlabelled_tickets
from tests.mlmodels.factories import ModelVersionFactory, PredictionFactory
from tests.tickets.factories import TicketFactory
from tickets.models import LabelChange, LabelSource, Ticket
from tickets.selectors import ticket_training_examples

pytestmark = pytest.mark.django_db


@pytest.fixture
def active_models(organization, import_sample):
    import_sample(organization, n=300)
    services.organization_models_train(organization=organization)
    return {
        v.target: v for v in ModelVersion.objects.filter(organization=organization, status="active")
    }


def test_classification_labels_new_tickets_and_keeps_human_labels(organization, active_models):
    new = unlabelled_tickets(organization, 40)
    imported = list(Ticket.objects.filter(organization=organization, source="import")[:40])
    before = {t.pk: (t.category, t.priority) for t in imported}

    report = services.tickets_classify(organization=organization)

    assert report.tickets == 340  # every ticket lacked a prediction from these versions
    for ticket in Ticket.objects.filter(pk__in=[t.pk for t in new]):
        assert ticket.category
        assert ticket.category_source == LabelSource.MODEL
        assert ticket.priority
        assert ticket.priority_source == LabelSource.MODEL
        prediction = ticket.predictions.get(target="category")
        assert prediction.label == ticket.category
        assert prediction.model_version == active_models["category"]
        assert 0.0 < prediction.confidence <= 1.0
        assert prediction.applied
    # Imported labels are human labels: predicted beside, never replaced.
    for ticket in Ticket.objects.filter(pk__in=before):
        assert (ticket.category, ticket.priority) == before[ticket.pk]
        assert ticket.category_source == LabelSource.IMPORT
        assert not ticket.predictions.get(target="category").applied


def test_low_confidence_is_flagged_for_review(organization, active_models):
    organization.confidence_threshold = 0.999
    organization.save()
    unsure = unlabelled_tickets(organization, 10)

    report = services.tickets_classify(organization=organization, ticket_ids=[t.pk for t in unsure])

    assert report.needs_review == 10
    assert Ticket.objects.filter(pk__in=[t.pk for t in unsure], needs_review=True).count() == 10
    # Once the predictions clear the threshold, the next run lifts the flag.
    organization.confidence_threshold = 0.0
    organization.save()
    services.tickets_classify(organization=organization, ticket_ids=[t.pk for t in unsure])
    assert not Ticket.objects.filter(pk__in=[t.pk for t in unsure], needs_review=True).exists()


def test_classifying_twice_keeps_one_prediction_per_ticket_target_and_version(
    organization, active_models
):
    tickets = unlabelled_tickets(organization, 30)
    ids = [t.pk for t in tickets]

    services.tickets_classify(organization=organization, ticket_ids=ids)
    services.tickets_classify(organization=organization, ticket_ids=ids)
    classify_ticket_task.apply(
        kwargs={"ticket_id": ids[0], "organization_id": organization.pk}
    ).get()

    counts = Prediction.objects.filter(ticket_id__in=ids).values(
        "ticket", "target", "model_version"
    )
    assert not counts.annotate(n=Count("id")).filter(n__gt=1).exists()
    assert Prediction.objects.filter(ticket_id__in=ids).count() == 60


def test_a_persons_patch_survives_reclassification_and_is_the_next_training_label(
    organization, active_models, api_client
):
    ticket = unlabelled_tickets(organization, 1)[0]
    services.ticket_classify(ticket=ticket)
    ticket.refresh_from_db()
    predicted = ticket.category
    corrected = "7" if predicted != "7" else "6"

    response = api_client.patch(
        f"/api/v1/tickets/{ticket.pk}", {"category": corrected}, format="json"
    )
    assert response.status_code == 200
    change = LabelChange.objects.get(ticket=ticket)
    assert (change.previous_value, change.new_value, change.changed_by.username) == (
        predicted,
        corrected,
        "olivia",
    )

    # A new model version classifies it again: the person's label stays.
    ModelVersion.objects.filter(organization=organization).update(status="retired")
    services.organization_models_train(organization=organization)
    services.tickets_classify(organization=organization)
    ticket.refresh_from_db()
    assert (ticket.category, ticket.category_source) == (corrected, LabelSource.PERSON)
    assert ticket.predictions.filter(target="category").count() == 2
    assert not ticket.predictions.filter(target="category").latest("id").applied

    # The correction is a training label; the model's own priority guess is not.
    assert (ticket.pk, ticket.text, corrected) in ticket_training_examples(
        organization=organization, target="category"
    )
    assert ticket.pk not in {
        pk for pk, _, _ in ticket_training_examples(organization=organization, target="priority")
    }
    before = active_models["category"]  # trained before the correction
    latest = services.model_train(organization=organization, target="category").version
    assert latest.training_set_size == before.training_set_size + 1 == 301
    assert latest.label_counts[corrected] == before.label_counts.get(corrected, 0) + 1


def test_ticket_api_shows_each_targets_prediction(organization, active_models, api_client):
    tickets = unlabelled_tickets(organization, 12)
    services.tickets_classify(organization=organization, ticket_ids=[t.pk for t in tickets])
    ticket = Ticket.objects.get(pk=tickets[0].pk)

    data = api_client.get(f"/api/v1/tickets/{ticket.pk}").data

    assert "external_id" in data
    category = data["predictions"]["category"]
    prediction = ticket.predictions.get(target="category")
    assert category["label"] == prediction.label == data["category"]
    assert category["confidence"] == pytest.approx(prediction.confidence, abs=1e-4)
    assert category["model_version"] == active_models["category"].version
    assert category["model_version_id"] == active_models["category"].pk
    assert category["needs_review"] == (prediction.confidence < organization.confidence_threshold)
    assert isinstance(category["top_terms"], list)
    assert data["predictions"]["priority"]["label"] == data["priority"]


def test_ticket_list_costs_a_fixed_number_of_queries(
    organization, active_models, api_client, django_assert_max_num_queries
):
    tickets = unlabelled_tickets(organization, 40)
    services.tickets_classify(organization=organization, ticket_ids=[t.pk for t in tickets])

    with django_assert_max_num_queries(8):
        response = api_client.get("/api/v1/tickets/?source=api")

    assert response.status_code == 200
    assert all(row["predictions"]["category"] for row in response.data["results"])


def test_ticket_list_shows_what_each_ticket_shows_alone(organization, active_models, api_client):
    tickets = unlabelled_tickets(organization, 6)
    services.tickets_classify(organization=organization, ticket_ids=[t.pk for t in tickets])
    # A newer row from an older version (as after a roll back) is the one shown.
    older = ModelVersionFactory(
        organization=organization, target="category", version=99, status="retired"
    )
    PredictionFactory(
        ticket=tickets[0], target="category", model_version=older, label="7", confidence=0.3
    )

    rows = api_client.get("/api/v1/tickets/?source=api").json()["results"]

    shown = {row["id"]: row["predictions"] for row in rows}
    for ticket in tickets:
        alone = ticket_prediction_fields(Ticket.objects.get(pk=ticket.pk))["predictions"]
        assert shown[ticket.pk] == json.loads(JSONRenderer().render(alone))
        assert shown[ticket.pk]["priority"]["model_version"] == active_models["priority"].version
    assert shown[tickets[0].pk]["category"]["model_version"] == 99
    assert shown[tickets[1].pk]["category"]["model_version"] == active_models["category"].version


def test_unclassified_ticket_has_empty_predictions(organization, api_client):
    ticket = TicketFactory(organization=organization)

    data = api_client.get(f"/api/v1/tickets/{ticket.pk}").data

    assert data["predictions"] == {"category": None, "priority": None}


def test_batch_task_reports_progress(organization, active_models):
    tickets = unlabelled_tickets(organization, 1200)

    result = batch_classify_tickets_task.apply(
        kwargs={"organization_id": organization.pk, "ticket_ids": [t.pk for t in tickets]}
    )

    assert result.get()["tickets"] == 1200
    # Eager runs store only the progress states: the last one is the whole batch.
    row = TaskResult.objects.get(task_id=result.id)
    assert row.status == "PROGRESS"
    assert '"done": 1200' in row.result
    assert '"total": 1200' in row.result


def test_no_active_model_means_nothing_to_do(organization):
    TicketFactory.create_batch(3, organization=organization)

    report = services.tickets_classify(organization=organization)

    assert report.skipped == "acme has no active model"
    assert not Prediction.objects.exists()


def test_batch_over_several_chunks_and_slices_matches_in_process_predict(
    organization, active_models
):
    tickets = unlabelled_tickets(organization, 90)
    ids = [t.pk for t in tickets]
    Prediction.objects.all().delete()
    pipelines = {target: registry.model_load(version=v) for target, v in active_models.items()}
    expected = {
        target: training.predict(pipeline=pipeline, texts=[t.text for t in tickets])
        for target, pipeline in pipelines.items()
    }

    # Slices of 40 tickets (as the batch task runs them), chunks of 17 inside each.
    after_id, slices, remaining = 0, 0, []
    while True:
        report = services.tickets_classify(
            organization=organization, after_id=after_id, limit=40, chunk_size=17
        )
        slices += 1
        remaining.append(report.remaining)
        after_id = report.last_id
        if not report.remaining:
            break

    total = Ticket.objects.filter(organization=organization).count()
    assert slices == -(-total // 40)
    assert remaining == sorted(remaining, reverse=True)
    counts = Prediction.objects.values("ticket", "target", "model_version").annotate(n=Count("id"))
    assert {row["n"] for row in counts} == {1}
    assert Prediction.objects.count() == total * len(active_models)
    for target, predictions in expected.items():
        stored = {
            p.ticket_id: p
            for p in Prediction.objects.filter(
                ticket_id__in=ids, model_version=active_models[target]
            )
        }
        for ticket, prediction in zip(tickets, predictions, strict=True):
            assert stored[ticket.pk].label == prediction.label
            assert stored[ticket.pk].confidence == pytest.approx(prediction.confidence)
            assert stored[ticket.pk].margin == pytest.approx(prediction.margin)
            assert stored[ticket.pk].top_terms == prediction.top_terms
            assert stored[ticket.pk].applied
    for ticket in Ticket.objects.filter(pk__in=ids):
        assert ticket.category == stored_label(ticket, "category")
        assert ticket.priority == stored_label(ticket, "priority")
        assert ticket.category_source == ticket.priority_source == LabelSource.MODEL


def stored_label(ticket: Ticket, target: str) -> str:
    return ticket.predictions.get(target=target).label


def test_a_task_naming_another_organizations_ticket_is_refused(
    organization, other_organization, active_models
):
    theirs = TicketFactory(organization=other_organization)

    result = classify_ticket_task.apply(
        kwargs={"ticket_id": theirs.pk, "organization_id": organization.pk}
    ).get()
    report = services.tickets_classify(organization=organization, ticket_ids=[theirs.pk])

    assert "does not exist" in result["skipped"]
    assert report.tickets == 0
    assert not Prediction.objects.filter(ticket=theirs).exists()
    theirs.refresh_from_db()
    assert theirs.category == ""


def test_the_classify_task_serves_the_version_active_when_it_runs(organization, active_models):
    first, second = unlabelled_tickets(organization, 2)
    classify_ticket_task.apply(
        kwargs={"ticket_id": first.pk, "organization_id": organization.pk}
    ).get()
    newer = services.model_train(organization=organization, target="category").version
    services.model_activate(version=newer)

    result = classify_ticket_task.apply(kwargs={"ticket_id": second.pk}).get()

    assert first.predictions.get(target="category").model_version_id == (
        active_models["category"].pk
    )
    assert second.predictions.get(target="category").model_version_id == newer.pk
    assert result["versions"] == {
        "category": newer.version,
        "priority": active_models["priority"].version,
    }
    second.refresh_from_db()
    assert (second.category, second.category_source) == (
        stored_label(second, "category"),
        LabelSource.MODEL,
    )
