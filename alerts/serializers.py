"""Alerts API input and output: rules, incidents and their deliveries."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from alerts import services
from alerts.models import AlertDelivery, AlertIncident, AlertIntegration, AlertRule, AlertRuleKind
from integrations.slack.serializers import AdminWorkspaceField
from tickets.models import Role
from tickets.serializers import OrganizationWithRoleField, StrictInputSerializer


class AlertDeliveryOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = AlertDelivery
        fields = [
            "id",
            "channel",
            "target",
            "kind",
            "state",
            "attempts",
            "error",
            "subject",
            "text",
            "created_at",
            "last_attempt_at",
            "sent_at",
        ]


class AlertIncidentOutputSerializer(serializers.ModelSerializer):
    organization_slug = serializers.CharField(source="organization.slug", read_only=True)
    rule_name = serializers.CharField(source="rule.name", read_only=True)
    deliveries = AlertDeliveryOutputSerializer(many=True, read_only=True)

    class Meta:
        model = AlertIncident
        fields = [
            "id",
            "organization",
            "organization_slug",
            "rule",
            "rule_name",
            "state",
            "count",
            "summary",
            "details",
            "opened_at",
            "last_seen_at",
            "resolved_at",
            "resolution",
            "deliveries",
        ]


class AlertRuleOutputSerializer(serializers.ModelSerializer):
    organization_slug = serializers.CharField(source="organization.slug", read_only=True)
    open_incident = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="id of the open incident, if any"
    )

    class Meta:
        model = AlertRule
        fields = [
            "id",
            "organization",
            "organization_slug",
            *services.RULE_FIELDS,
            "open_incident",
            "last_evaluated_at",
            "created_at",
            "updated_at",
        ]


def _recipients_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.EmailField(max_length=254),
        max_length=services.MAX_RECIPIENTS,
        allow_empty=True,
        **kwargs,
    )


class AlertRuleCreateInputSerializer(StrictInputSerializer):
    organization = OrganizationWithRoleField(min_role=Role.ADMIN)
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=AlertRuleKind.values)
    task_pattern = serializers.CharField(
        max_length=255, allow_blank=True, default="", help_text="fnmatch, e.g. integrations.tasks.*"
    )
    integration = serializers.ChoiceField(
        choices=AlertIntegration.values, default=AlertIntegration.ANY
    )
    # Absent: 1 (failures, integrations), 10 points for model_accuracy (see alert_rule_create).
    threshold = serializers.IntegerField(
        min_value=1, max_value=services.MAX_THRESHOLD, required=False
    )
    window_minutes = serializers.IntegerField(
        min_value=1, max_value=services.MAX_WINDOW_MINUTES, default=15
    )
    slack_workspace = AdminWorkspaceField(allow_null=True, default=None)
    slack_channel = serializers.CharField(max_length=80, allow_blank=True, default="")
    email_recipients = _recipients_field(default=list)
    enabled = serializers.BooleanField(default=True)


class AlertRuleUpdateInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200, required=False)
    kind = serializers.ChoiceField(choices=AlertRuleKind.values, required=False)
    task_pattern = serializers.CharField(max_length=255, allow_blank=True, required=False)
    integration = serializers.ChoiceField(choices=AlertIntegration.values, required=False)
    threshold = serializers.IntegerField(
        min_value=1, max_value=services.MAX_THRESHOLD, required=False
    )
    window_minutes = serializers.IntegerField(
        min_value=1, max_value=services.MAX_WINDOW_MINUTES, required=False
    )
    slack_workspace = AdminWorkspaceField(allow_null=True, required=False)
    slack_channel = serializers.CharField(max_length=80, allow_blank=True, required=False)
    email_recipients = _recipients_field(required=False)
    enabled = serializers.BooleanField(required=False)
