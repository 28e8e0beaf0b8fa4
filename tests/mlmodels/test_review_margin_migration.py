"""Tickets flagged before the margin was stored get it from their predictions on migrate."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BEFORE = [("tickets", "0003_ticket_review_margin"), ("mlmodels", "0002_model_selection_and_margin")]


def _insert(cursor, table, **values):
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    cursor.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) RETURNING id",  # noqa: S608
        list(values.values()),
    )
    return cursor.fetchone()[0]


def _ticket(cursor, org, n, *, needs_review):
    return _insert(
        cursor,
        "tickets_ticket",
        organization_id=org,
        source="api",
        external_id=f"m-{n}",
        subject="s",
        body="b",
        requester="",
        status="new",
        category="",
        category_source="model",
        priority="",
        priority_source="model",
        needs_review=needs_review,
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
    )


def _version(cursor, org, target, version, status):
    return _insert(
        cursor,
        "mlmodels_modelversion",
        organization_id=org,
        target=target,
        version=version,
        status=status,
        params="{}",
        metrics="{}",
        selection="{}",
        comparison="{}",
        labels="[]",
        label_counts="{}",
        training_set_size=0,
        n_train=0,
        n_test=0,
        n_shipped=0,
        test_ticket_ids="[]",
        label_watermark="{}",
        library_versions="{}",
        artifact="",
        artifact_sha256="",
        artifact_size=0,
        trained_by_task_id="",
        triggered_by="",
        activated_by="",
        error="",
        created_at="2026-01-01T00:00:00Z",
    )


def _prediction(cursor, ticket, version, target, confidence, margin, *, applied=True):
    _insert(
        cursor,
        "mlmodels_prediction",
        ticket_id=ticket,
        model_version_id=version,
        target=target,
        label="x",
        confidence=confidence,
        margin=margin,
        top_terms="[]",
        applied=applied,
        created_at="2026-01-01T00:00:00Z",
    )


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production database")
def test_backfill_stores_the_smallest_unsure_margin_of_active_models():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    with connection.cursor() as cursor:
        org = _insert(
            cursor,
            "tickets_organization",
            slug="mig",
            name="Mig",
            confidence_threshold=0.6,
            created_at="2026-01-01T00:00:00Z",
        )
        category = _version(cursor, org, "category", 1, "active")
        priority = _version(cursor, org, "priority", 1, "active")
        retired = _version(cursor, org, "category", 0, "retired")
        both = _ticket(cursor, org, 1, needs_review=True)
        _prediction(cursor, both, category, "category", 0.5, 0.2)
        _prediction(cursor, both, priority, "priority", 0.4, 0.1)
        # A confident prediction and a retired model's do not count.
        one = _ticket(cursor, org, 2, needs_review=True)
        _prediction(cursor, one, category, "category", 0.55, 0.3)
        _prediction(cursor, one, priority, "priority", 0.9, 0.05)
        _prediction(cursor, one, retired, "category", 0.1, 0.01)
        none = _ticket(cursor, org, 3, needs_review=True)
        _prediction(cursor, none, category, "category", 0.5, 0.2, applied=False)
        settled = _ticket(cursor, org, 4, needs_review=False)
        _prediction(cursor, settled, category, "category", 0.5, 0.2)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, review_margin FROM tickets_ticket WHERE organization_id = %s", [org]
        )
        margins = dict(cursor.fetchall())
    assert margins == {
        both: pytest.approx(0.1),
        one: pytest.approx(0.3),
        none: None,
        settled: None,
    }
