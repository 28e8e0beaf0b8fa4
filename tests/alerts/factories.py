"""factory_boy factories for alert rules and incidents (rows as the services leave them)."""

from __future__ import annotations

import factory
from django.utils import timezone

from alerts.models import AlertIncident, AlertRule
from tests.tickets.factories import OrganizationFactory


class AlertRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AlertRule

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Rule {n}")
    task_pattern = "taskops.tasks.*"
    email_recipients = factory.List(["ops@example.com"])


class AlertIncidentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AlertIncident

    rule = factory.SubFactory(AlertRuleFactory)
    organization = factory.SelfAttribute("rule.organization")
    summary = factory.LazyAttribute(lambda incident: f"{incident.rule.name} fired")
    opened_at = factory.LazyFunction(timezone.now)
    last_seen_at = factory.SelfAttribute("opened_at")
