"""The ticket API as a client sees it: scoping, roles, filters and bad input."""

from __future__ import annotations

import json

import pytest
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from tests.tickets.factories import TicketFactory
from tickets.models import LabelChange, LabelSource, Role, Source, Status, Ticket, TicketMessage
from tickets.serializers import (
    TicketDetailOutputSerializer,
    TicketOutputSerializer,
    ticket_output_extensions,
)

pytestmark = pytest.mark.django_db


def test_list_shows_only_the_callers_organizations(api_client, organization, other_organization):
    mine = TicketFactory.create_batch(3, organization=organization)
    TicketFactory.create_batch(2, organization=other_organization)

    response = api_client.get("/api/v1/tickets/")

    assert response.status_code == 200
    assert response.data["count"] == 3
    assert {row["id"] for row in response.data["results"]} == {t.id for t in mine}


def test_seed_paths_work_without_trailing_slash(api_client, organization):
    ticket = TicketFactory(organization=organization)
    assert api_client.get("/api/v1/tickets").status_code == 200
    assert api_client.get(f"/api/v1/tickets/{ticket.id}").status_code == 200
    assert api_client.get("/api/v1/organizations").data["results"][0]["slug"] == "acme"


def test_filters_and_search(api_client, organization):
    TicketFactory(organization=organization, category="4", status="open", subject="vpn broken")
    TicketFactory(organization=organization, category="5", status="open", subject="laptop")
    TicketFactory(organization=organization, category="4", status="closed", needs_review=True)

    def ids(query: str) -> int:
        return api_client.get(f"/api/v1/tickets/?{query}").data["count"]

    assert ids("category=4") == 2
    assert ids("category=4&status=open") == 1
    assert ids("needs_review=true") == 1
    assert ids("search=vpn") == 1
    assert ids(f"organization={organization.id}") == 3


def test_pagination(api_client, organization):
    TicketFactory.create_batch(60, organization=organization)
    first = api_client.get("/api/v1/tickets/").data
    assert first["count"] == 60
    assert len(first["results"]) == 50
    assert len(api_client.get(first["next"]).data["results"]) == 10


def _as_drf_renders(serializer_class: type, ticket: Ticket) -> dict:
    """DRF's own ModelSerializer.to_representation plus the apps' extensions, as JSON."""
    data = serializers.ModelSerializer.to_representation(serializer_class(), ticket)
    for extension in ticket_output_extensions:
        data.update(extension(ticket))
    return json.loads(JSONRenderer().render(data))


def test_list_and_detail_render_every_field_as_drf_does(api_client, organization):
    tickets = [
        TicketFactory(
            organization=organization,
            source=Source.EMAIL,
            external_id="<abc@example.com>",
            category="network",
            category_source=LabelSource.PERSON,
            priority="high",
            priority_source=LabelSource.MODEL,
            status=Status.PENDING,
            needs_review=True,
        ),
        TicketFactory(organization=organization, source=Source.SLACK, external_id="C1:123.4"),
        TicketFactory(organization=organization, subject="", body="", requester=""),
        TicketFactory(organization=organization, source=Source.IMPORT, subject="Ünïcode ✓"),
    ]
    TicketMessage.objects.create(ticket=tickets[0], source=Source.EMAIL, author="a@example.com")

    rows = api_client.get("/api/v1/tickets/").json()["results"]
    detail = api_client.get(f"/api/v1/tickets/{tickets[0].pk}/").json()

    fresh = Ticket.objects.filter(organization=organization)
    assert rows == [_as_drf_renders(TicketOutputSerializer, ticket) for ticket in fresh]
    assert detail == _as_drf_renders(TicketDetailOutputSerializer, fresh.get(pk=tickets[0].pk))
    assert list(rows[0])[:3] == ["id", "organization", "organization_slug"]


def test_create_and_retrieve(api_client, organization):
    response = api_client.post(
        "/api/v1/tickets/",
        {"organization": organization.id, "subject": "VPN down", "body": "cannot connect"},
        format="json",
    )
    assert response.status_code == 201, response.data
    ticket = Ticket.objects.get(pk=response.data["id"])
    assert (ticket.subject, ticket.source) == ("VPN down", "api")

    detail = api_client.get(f"/api/v1/tickets/{ticket.id}/")
    assert detail.status_code == 200
    assert detail.data["subject"] == "VPN down"
    assert detail.data["messages"] == []


def test_create_with_same_external_id_is_idempotent(api_client, organization):
    payload = {"organization": organization.id, "subject": "x", "external_id": "ext-1"}
    assert api_client.post("/api/v1/tickets/", payload, format="json").status_code == 201
    again = api_client.post("/api/v1/tickets/", payload, format="json")
    assert again.status_code == 200
    assert Ticket.objects.filter(external_id="ext-1").count() == 1


def test_patch_label_is_recorded_as_a_training_label(api_client, organization, user):
    ticket = TicketFactory(
        organization=organization,
        category="4",
        category_source=LabelSource.MODEL,
        needs_review=True,
    )

    response = api_client.patch(f"/api/v1/tickets/{ticket.id}", {"category": "6"}, format="json")

    assert response.status_code == 200, response.data
    ticket.refresh_from_db()
    assert (ticket.category, ticket.category_source, ticket.needs_review) == ("6", "person", False)
    change = LabelChange.objects.get(ticket=ticket)
    assert (change.previous_value, change.new_value, change.changed_by) == ("4", "6", user)


def test_other_organizations_ticket_is_404(api_client, other_organization):
    ticket = TicketFactory(organization=other_organization, subject="secret")
    assert api_client.get(f"/api/v1/tickets/{ticket.id}/").status_code == 404
    response = api_client.patch(
        f"/api/v1/tickets/{ticket.id}/", {"status": "closed"}, format="json"
    )
    assert response.status_code == 404
    ticket.refresh_from_db()
    assert ticket.status == "new"


def test_create_in_another_organization_is_refused(api_client, other_organization):
    response = api_client.post(
        "/api/v1/tickets/", {"organization": other_organization.id, "subject": "x"}, format="json"
    )
    assert response.status_code == 400
    assert "organization" in response.data
    assert not Ticket.objects.exists()


def test_viewer_cannot_write(make_user, make_api_client, organization):
    viewer = make_api_client(make_user(organization=organization, role=Role.VIEWER))
    ticket = TicketFactory(organization=organization)

    assert viewer.get(f"/api/v1/tickets/{ticket.id}/").status_code == 200
    assert (
        viewer.patch(f"/api/v1/tickets/{ticket.id}/", {"status": "open"}, format="json").status_code
        == 403
    )
    created = viewer.post(
        "/api/v1/tickets/", {"organization": organization.id, "subject": "x"}, format="json"
    )
    assert created.status_code == 403
    assert Ticket.objects.count() == 1


def test_anonymous_is_refused():
    assert APIClient().get("/api/v1/tickets/").status_code == 401


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"organization": 999999, "subject": "x"}, "organization"),
        ({"subject": "x"}, "organization"),
        ({"organization": "ORG", "subject": "x" * 501}, "subject"),
        ({"organization": "ORG", "subject": "", "body": ""}, "subject"),
        ({"organization": "ORG", "subject": "x", "requester": "r" * 300}, "requester"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(api_client, organization, payload, field):
    payload = {k: (organization.id if v == "ORG" else v) for k, v in payload.items()}
    response = api_client.post("/api/v1/tickets/", payload, format="json")
    assert response.status_code == 400
    assert field in response.data
    assert not Ticket.objects.exists()


def test_malformed_json_is_400(api_client, organization):
    response = api_client.post(
        "/api/v1/tickets/", data='{"organization": 1, "subject": ', content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.data["detail"]
    assert not Ticket.objects.exists()


def test_patch_of_unknown_or_bad_field_is_400(api_client, organization):
    ticket = TicketFactory(organization=organization)
    bad_status = api_client.patch(
        f"/api/v1/tickets/{ticket.id}/", {"status": "nope"}, format="json"
    )
    assert bad_status.status_code == 400
    assert "status" in bad_status.data
    readonly = api_client.patch(f"/api/v1/tickets/{ticket.id}/", {"organization": 5}, format="json")
    assert readonly.status_code == 400
    assert "organization" in readonly.data
    ticket.refresh_from_db()
    assert ticket.status == "new"


def test_superuser_sees_every_organization(
    make_user, make_api_client, organization, other_organization
):
    TicketFactory(organization=organization)
    TicketFactory(organization=other_organization)
    admin = make_api_client(make_user(is_superuser=True, is_staff=True))
    assert admin.get("/api/v1/tickets/").data["count"] == 2
    assert admin.get("/api/v1/organizations/").data["count"] == 2


def test_schema_and_docs_are_served(api_client):
    schema = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/v1/tickets/" in str(schema.content)
    docs = api_client.get("/api/v1/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()
