"""Two tenants with one row of every kind the admin shows, and a staff member of one of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from alerts.models import AlertDelivery, AlertIncident, AlertRule
from integrations.models import (
    InboundEmail,
    Mailbox,
    SlackChannel,
    SlackEvent,
    SlackMessage,
    SlackWorkspace,
)
from mlmodels.models import ModelStatus, ModelVersion, Prediction
from taskops.models import TaskRecord, TaskState
from tickets.models import LabelChange, Membership, Organization, Role, Ticket

STAFF_PASSWORD = "scoped-staff-pass-123"

# Every app whose model permissions the scoped staff member is given: the scoping must
# hold even for someone Django's permissions would let see everything.
PERMISSION_APPS = [
    "tickets",
    "taskops",
    "mlmodels",
    "integrations",
    "alerts",
    "django_celery_beat",
    "django_celery_results",
    "auth",
    "authtoken",
    "axes",
]


@dataclass
class Tenant:
    organization: Organization
    rows: dict[str, Any] = field(default_factory=dict)


def build_tenant(slug: str, index: int) -> Tenant:
    now = timezone.now()
    org = Organization.objects.create(slug=slug, name=slug.title())
    ticket = Ticket.objects.create(
        organization=org, subject=f"{slug} printer on fire", body="help", source="api"
    )
    version = ModelVersion.objects.create(
        organization=org, target="category", version=1, status=ModelStatus.READY
    )
    rule = AlertRule.objects.create(
        organization=org,
        name=f"{slug} failures",
        task_pattern="integrations.*",
        email_recipients=[f"ops@{slug}.example"],
        enabled=True,
    )
    incident = AlertIncident.objects.create(
        rule=rule, organization=org, opened_at=now, last_seen_at=now, summary=f"{slug} down"
    )
    workspace = SlackWorkspace.objects.create(
        organization=org, team_id=f"T{index}SEC", name=f"{slug} slack", bot_token="xoxb-test"
    )
    mailbox = Mailbox.objects.create(
        organization=org,
        name=f"{slug} support",
        host="127.0.0.1",
        port=1,
        security="none",
        username=f"{slug}@example.com",
        password="not-used",
    )
    tenant = Tenant(organization=org)
    tenant.rows = {
        "organization": org,
        "ticket": ticket,
        "labelchange": LabelChange.objects.create(
            ticket=ticket, field="category", previous_value="", new_value="4"
        ),
        "taskrecord": TaskRecord.objects.create(
            task_id=f"{slug}-task-1",
            name="integrations.tasks.sync_slack_tickets",
            organization=org,
            state=TaskState.FAILURE,
            kwargs={"organization_id": org.pk},
            queued_at=now,
            updated_at=now,
        ),
        "modelversion": version,
        "prediction": Prediction.objects.create(
            ticket=ticket, target="category", model_version=version, label="4", confidence=0.9
        ),
        "alertrule": rule,
        "alertincident": incident,
        "alertdelivery": AlertDelivery.objects.create(
            incident=incident,
            channel="email",
            target=f"ops@{slug}.example",
            kind="opened",
            text="down",
            state="failed",
        ),
        "slackworkspace": workspace,
        "slackchannel": SlackChannel.objects.create(
            workspace=workspace, channel_id=f"C{index}SEC", name="help", latest_ts="1700000000.1"
        ),
        "slackmessage": SlackMessage.objects.create(
            organization=org,
            team_id=workspace.team_id,
            channel_id=f"C{index}SEC",
            ts=f"1700000000.{index}",
            kind="ticket",
            text=f"{slug} message",
        ),
        "slackevent": SlackEvent.objects.create(
            event_id=f"Ev{index}SEC",
            team_id=workspace.team_id,
            workspace=workspace,
            event_type="message",
        ),
        "mailbox": mailbox,
        "inboundemail": InboundEmail.objects.create(
            organization=org,
            mailbox=mailbox,
            uidvalidity=1,
            uid=index,
            state="ticket",
            subject=f"{slug} mail",
            ticket=ticket,
        ),
    }
    return tenant


@pytest.fixture
def tenants(db: None) -> tuple[Tenant, Tenant]:
    """Organizations A (administered by the scoped staff member) and B (not)."""
    return build_tenant("alpha", 1), build_tenant("bravo", 2)


@pytest.fixture
def scoped_staff(tenants: tuple[Tenant, Tenant], make_user: Any) -> Any:
    """Staff, not superuser, with every model permission; admin of A, nothing in B."""
    alpha, _ = tenants
    user = make_user(username="scoped", is_staff=True, password=STAFF_PASSWORD)
    Membership.objects.create(user=user, organization=alpha.organization, role=Role.ADMIN)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label__in=PERMISSION_APPS)
    )
    return user
