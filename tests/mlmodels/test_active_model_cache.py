"""Whether an organization has a serving model is cached per organization, not asked per ticket."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from mlmodels import services

# Transactional: new tickets are announced after commit, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

CLASSIFY = "mlmodels.tasks.classify_ticket_task"


def _model_version_queries(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries if "mlmodels_modelversion" in q["sql"]]


def test_a_promotion_is_seen_by_the_very_next_ticket(
    organization, api_client, import_sample, published
):
    import_sample(organization, n=300)  # asks (and caches) "no active model"
    before = api_client.post(
        "/api/v1/tickets/", {"organization": organization.pk, "subject": "vpn down"}, format="json"
    )
    assert before.status_code == 201
    assert not [m for m in published if m["name"] == CLASSIFY]

    outcome = services.model_train(organization=organization, target="category")
    assert outcome.status == "active"
    after = api_client.post(
        "/api/v1/tickets/", {"organization": organization.pk, "subject": "mail full"}, format="json"
    )

    assert [m["kwargs"]["ticket_id"] for m in published if m["name"] == CLASSIFY] == [
        after.data["id"]
    ]


def test_later_tickets_do_not_ask_the_database_again(
    organization, api_client, import_sample, published
):
    import_sample(organization, n=300)
    services.model_train(organization=organization, target="category")

    captured = []
    for subject in ("printer jam", "printer jam again"):
        with CaptureQueriesContext(connection) as queries:
            response = api_client.post(
                "/api/v1/tickets/",
                {"organization": organization.pk, "subject": subject},
                format="json",
            )
        assert response.status_code == 201
        captured.append(queries)

    first, second = captured
    assert [m["name"] for m in published if m["name"] == CLASSIFY] == [CLASSIFY, CLASSIFY]
    assert _model_version_queries(first)
    assert not _model_version_queries(second)
    assert len(second) == len(first) - 1
