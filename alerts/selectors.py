"""Reads of alert rules and incidents, scoped to the caller's organizations."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from alerts.models import AlertIncident, AlertRule
from tickets.selectors import organization_list_for_user


def alert_rule_list_for_user(*, user: Any) -> QuerySet[AlertRule]:
    """Rules of the organizations the caller belongs to."""
    return AlertRule.objects.filter(
        organization__in=organization_list_for_user(user=user)
    ).select_related("organization")


def alert_incident_list_for_user(*, user: Any) -> QuerySet[AlertIncident]:
    """Incidents of the caller's organizations, newest first, with their deliveries."""
    return (
        AlertIncident.objects.filter(organization__in=organization_list_for_user(user=user))
        .select_related("rule", "organization")
        .prefetch_related("deliveries")
        .order_by("-opened_at", "-id")
    )
