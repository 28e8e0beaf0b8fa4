"""Moving the alert models from taskops to alerts keeps every row of a migrated database.

The test rebuilds the schema that databases had before the move (taskops 0003 as it was,
kept in tests/alerts/migrations/), writes rules, incidents and deliveries into it, migrates
forward, and reads them back through the alerts app's models; on PostgreSQL.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from alerts.models import AlertDelivery, AlertIncident, AlertRule
from tests.integrations.factories import SlackWorkspaceFactory
from tests.tickets.factories import OrganizationFactory, UserFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BEFORE = ("taskops", "0002_schedulerlease_taskrecord")
TABLES = ("taskops_alertrule", "taskops_alertincident", "taskops_alertdelivery")


def constraints() -> dict[str, Any]:
    """Every constraint and index of the alert tables, by table."""
    with connection.cursor() as cursor:
        return {table: connection.introspection.get_constraints(cursor, table) for table in TABLES}


def migrate_to_the_schema_before_the_move() -> Any:
    """Unapply down to taskops 0002, then apply taskops 0003 as it was; its project state."""
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    executor.loader.build_graph()
    state = executor.loader.project_state([BEFORE, ("integrations", "0002_email_ingestion")])
    before = importlib.import_module("tests.alerts.migrations.taskops_0003_alerts_before")
    migration = before.Migration("0003_alerts", "taskops")
    with connection.schema_editor(atomic=True) as editor:
        state = migration.apply(state, editor)
    MigrationRecorder(connection).record_applied("taskops", "0003_alerts")
    return state


def migrate_forward() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the production database")
def test_rules_incidents_and_deliveries_written_before_the_move_are_read_by_alerts():
    fresh = constraints()
    old = migrate_to_the_schema_before_the_move()
    assert constraints() == fresh  # the old migration built what a new database has

    organization = OrganizationFactory(slug="acme", name="Acme")
    workspace = SlackWorkspaceFactory(organization=organization)
    rule_model = old.apps.get_model("taskops", "AlertRule")
    incident_model = old.apps.get_model("taskops", "AlertIncident")
    delivery_model = old.apps.get_model("taskops", "AlertDelivery")
    now = timezone.now()
    rule = rule_model.objects.create(
        organization_id=organization.pk,
        name="Sync failing",
        task_pattern="integrations.tasks.*",
        threshold=3,
        slack_workspace_id=workspace.pk,
        slack_channel="#ops",
        email_recipients=["ops@acme.test"],
    )
    incident = incident_model.objects.create(
        rule=rule,
        organization_id=organization.pk,
        count=3,
        details={"tasks": {"integrations.tasks.sync_slack_tickets": 3}},
        summary="3 failures",
        opened_at=now - timedelta(minutes=5),
        last_seen_at=now,
    )
    delivery_model.objects.create(
        incident=incident,
        channel="slack",
        target="#ops",
        kind="fired",
        text="Alert fired",
        state="sent",
        attempts=1,
        sent_at=now,
    )
    # A person allowed to change rules under the old app label keeps that right.
    operator = UserFactory(username="olga", is_staff=True)
    operator.user_permissions.add(
        Permission.objects.get(content_type__app_label="taskops", codename="change_alertrule")
    )

    migrate_forward()

    moved = AlertRule.objects.get()
    assert (moved.pk, moved.name, moved.threshold, moved.slack_channel) == (
        rule.pk,
        "Sync failing",
        3,
        "#ops",
    )
    assert moved.slack_workspace == workspace
    assert moved.email_recipients == ["ops@acme.test"]
    [moved_incident] = moved.incidents.all()
    assert moved_incident.details == {"tasks": {"integrations.tasks.sync_slack_tickets": 3}}
    [delivery] = moved_incident.deliveries.all()
    assert (delivery.channel, delivery.state, delivery.sent_at) == ("slack", "sent", now)
    assert AlertIncident.objects.filter(organization=organization).count() == 1
    assert AlertDelivery.objects.count() == 1
    assert constraints() == fresh
    assert not ContentType.objects.filter(app_label="taskops", model__startswith="alert").exists()
    assert type(operator).objects.get(pk=operator.pk).has_perm("alerts.change_alertrule")
    # The moved rows take new ones beside them (the sequences came along).
    AlertRule.objects.create(organization=organization, name="Another", task_pattern="x.*")
    assert AlertRule.objects.count() == 2
