"""The ML endpoints as a client sees them: roles, bad input, scoping to the caller's orgs."""

from __future__ import annotations

import pytest

from mlmodels import services
from mlmodels.models import ModelVersion
from taskops.services import TRIGGERED_BY_HEADER
from tests.tickets.factories import TicketFactory
from tickets.models import Role

# Transactional: tasks are published after commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)


def _version(organization, target="category", version=1, status="active", **kwargs):
    return ModelVersion.objects.create(
        organization=organization,
        target=target,
        version=version,
        status=status,
        metrics={"accuracy": 0.9, "macro_f1": 0.7},
        **kwargs,
    )


def test_classify_ticket_enqueues_a_task(api_client, organization, user, published):
    ticket = TicketFactory(organization=organization)

    response = api_client.post(
        "/api/v1/tasks/ml/classify-ticket", {"ticket_id": ticket.pk}, format="json"
    )

    assert response.status_code == 202
    [message] = published
    assert message["name"] == "mlmodels.tasks.classify_ticket_task"
    assert message["kwargs"] == {"ticket_id": ticket.pk, "organization_id": organization.pk}
    assert message["headers"]["id"] == response.data["task_id"]
    assert message["headers"][TRIGGERED_BY_HEADER] == f"user:{user.pk}"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "ticket_id"),
        ({"ticket_id": "seven"}, "ticket_id"),
        ({"ticket_id": 1, "tiket": 2}, "tiket"),
    ],
)
def test_classify_ticket_bad_input_names_the_field(api_client, body, field, published):
    response = api_client.post("/api/v1/tasks/ml/classify-ticket/", body, format="json")

    assert response.status_code == 400
    assert field in response.data
    assert not published


def test_batch_classify_with_and_without_ids(api_client, organization, published):
    tickets = TicketFactory.create_batch(3, organization=organization)

    everything = api_client.post(
        "/api/v1/tasks/ml/batch-classify", {"organization_id": organization.pk}, format="json"
    )
    some = api_client.post(
        "/api/v1/tasks/ml/batch-classify/",
        {"organization_id": organization.pk, "ticket_ids": [tickets[1].pk, tickets[0].pk]},
        format="json",
    )

    assert (everything.status_code, some.status_code) == (202, 202)
    assert [m["kwargs"] for m in published] == [
        {"organization_id": organization.pk},
        {"organization_id": organization.pk, "ticket_ids": sorted([tickets[0].pk, tickets[1].pk])},
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "organization_id"),
        ({"organization_id": "acme"}, "organization_id"),
        ({"organization_id": 1, "ticket_ids": []}, "ticket_ids"),
        ({"organization_id": 1, "ticket_ids": ["x"]}, "ticket_ids"),
    ],
)
def test_batch_classify_bad_input_names_the_field(api_client, body, field, published):
    response = api_client.post("/api/v1/tasks/ml/batch-classify", body, format="json")

    assert response.status_code == 400
    assert field in response.data


def test_train_model_enqueues_and_validates_targets(api_client, organization, published):
    ok = api_client.post(
        "/api/v1/tasks/ml/train-model", {"organization_id": organization.pk}, format="json"
    )
    bad = api_client.post(
        "/api/v1/tasks/ml/train-model",
        {"organization_id": organization.pk, "targets": ["colour"]},
        format="json",
    )

    assert ok.status_code == 202
    assert published[0]["name"] == "mlmodels.tasks.train_organization_model_task"
    assert published[0]["kwargs"] == {"organization_id": organization.pk}
    assert bad.status_code == 400
    assert "targets" in bad.data
    assert len(published) == 1


def test_viewers_may_not_trigger_tasks(organization, make_user, make_api_client, published):
    viewer = make_api_client(make_user(organization=organization, role=Role.VIEWER))
    ticket = TicketFactory(organization=organization)

    assert (
        viewer.post(
            "/api/v1/tasks/ml/classify-ticket", {"ticket_id": ticket.pk}, format="json"
        ).status_code
        == 403
    )
    assert (
        viewer.post(
            "/api/v1/tasks/ml/train-model", {"organization_id": organization.pk}, format="json"
        ).status_code
        == 403
    )
    assert viewer.get("/api/v1/models/").status_code == 200
    assert not published


def test_no_endpoint_touches_another_organizations_tickets_or_models(
    api_client, organization, other_organization, make_user, make_api_client, published
):
    theirs = TicketFactory(organization=other_organization)
    mine = TicketFactory(organization=organization)
    their_model = _version(other_organization)
    my_model = _version(organization)
    # Even an admin of acme is an outsider to globex.
    admin = make_api_client(make_user(organization=organization, role=Role.ADMIN))

    for client in (api_client, admin):
        assert (
            client.post(
                "/api/v1/tasks/ml/classify-ticket", {"ticket_id": theirs.pk}, format="json"
            ).status_code
            == 404
        )
        assert (
            client.post(
                "/api/v1/tasks/ml/batch-classify",
                {"organization_id": other_organization.pk},
                format="json",
            ).status_code
            == 404
        )
        assert (
            client.post(
                "/api/v1/tasks/ml/batch-classify",
                {"organization_id": organization.pk, "ticket_ids": [mine.pk, theirs.pk]},
                format="json",
            ).status_code
            == 404
        )
        assert (
            client.post(
                "/api/v1/tasks/ml/train-model",
                {"organization_id": other_organization.pk},
                format="json",
            ).status_code
            == 404
        )
        assert client.get(f"/api/v1/models/{their_model.pk}").status_code == 404
        assert client.post(f"/api/v1/models/{their_model.pk}/activate").status_code == 404
        listed = client.get("/api/v1/models/").data
        assert [row["id"] for row in listed["results"]] == [my_model.pk]
        assert (
            client.get(f"/api/v1/models/?organization={other_organization.pk}").data["count"] == 0
        )
    assert not published
    their_model.refresh_from_db()
    assert their_model.status == "active"


def test_models_list_shows_metrics_and_filters(api_client, organization):
    _version(organization, version=1, status="retired")
    active = _version(organization, version=2, status="active")
    _version(organization, target="priority", version=1, status="rejected")

    rows = api_client.get("/api/v1/models/?target=category&status=active").data["results"]

    assert [row["id"] for row in rows] == [active.pk]
    assert rows[0]["metrics"]["macro_f1"] == rows[0]["macro_f1"] == 0.7
    assert (rows[0]["organization"], rows[0]["organization_slug"]) == (organization.pk, "acme")
    assert "test_ticket_ids" not in rows[0]
    assert api_client.get(f"/api/v1/models?organization={organization.pk}").data["count"] == 3
    assert (
        api_client.get("/api/v1/models/?status=rejected").data["results"][0]["target"] == "priority"
    )


def test_superusers_see_every_organizations_models(
    organization, other_organization, make_user, make_api_client
):
    _version(organization)
    _version(other_organization)
    root = make_api_client(make_user(is_superuser=True, username="root"))

    assert root.get("/api/v1/models/").data["count"] == 2


def test_a_new_ticket_gets_its_own_classification_task(
    organization, api_client, import_sample, published
):
    import_sample(organization, n=200)
    services.organization_models_train(organization=organization)
    published.clear()  # the import itself

    response = api_client.post(
        "/api/v1/tickets/", {"organization": organization.pk, "subject": "vpn down"}, format="json"
    )

    assert response.status_code == 201
    assert [(m["name"], m["kwargs"]) for m in published] == [
        (
            "mlmodels.tasks.classify_ticket_task",
            {"ticket_id": response.data["id"], "organization_id": organization.pk},
        )
    ]
