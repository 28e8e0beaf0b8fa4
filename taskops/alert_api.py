"""Alerts API: rules (organization admins configure, members read) and incidents (members read).

Incidents carry their deliveries: each message, where it went, and how sending it went.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import OuterRef, QuerySet, Subquery
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from integrations.slack.serializers import AdminWorkspaceField
from taskops import alerts
from taskops.models import (
    AlertDelivery,
    AlertIncident,
    AlertIncidentState,
    AlertIntegration,
    AlertRule,
    AlertRuleKind,
)
from tickets.models import Role
from tickets.permissions import OrganizationRolePermission, require_role_of_members
from tickets.serializers import OrganizationWithRoleField

# ------------------------------------------------------------------------------
# Serializers
# ------------------------------------------------------------------------------


class _NoUnknownFields(serializers.Serializer):
    """Refuses fields it does not know, naming them (e.g. ``organization`` in a PATCH)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: "this field cannot be set here" for name in sorted(unknown)}
            )
        return attrs


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
            *alerts.RULE_FIELDS,
            "open_incident",
            "last_evaluated_at",
            "created_at",
            "updated_at",
        ]


def _recipients_field(**kwargs: Any) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.EmailField(max_length=254),
        max_length=alerts.MAX_RECIPIENTS,
        allow_empty=True,
        **kwargs,
    )


class AlertRuleCreateInputSerializer(_NoUnknownFields):
    organization = OrganizationWithRoleField(min_role=Role.ADMIN)
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=AlertRuleKind.values)
    task_pattern = serializers.CharField(
        max_length=255, allow_blank=True, default="", help_text="fnmatch, e.g. integrations.tasks.*"
    )
    integration = serializers.ChoiceField(
        choices=AlertIntegration.values, default=AlertIntegration.ANY
    )
    threshold = serializers.IntegerField(min_value=1, max_value=alerts.MAX_THRESHOLD, default=1)
    window_minutes = serializers.IntegerField(
        min_value=1, max_value=alerts.MAX_WINDOW_MINUTES, default=15
    )
    slack_workspace = AdminWorkspaceField(allow_null=True, default=None)
    slack_channel = serializers.CharField(max_length=80, allow_blank=True, default="")
    email_recipients = _recipients_field(default=list)
    enabled = serializers.BooleanField(default=True)


class AlertRuleUpdateInputSerializer(_NoUnknownFields):
    name = serializers.CharField(max_length=200, required=False)
    kind = serializers.ChoiceField(choices=AlertRuleKind.values, required=False)
    task_pattern = serializers.CharField(max_length=255, allow_blank=True, required=False)
    integration = serializers.ChoiceField(choices=AlertIntegration.values, required=False)
    threshold = serializers.IntegerField(
        min_value=1, max_value=alerts.MAX_THRESHOLD, required=False
    )
    window_minutes = serializers.IntegerField(
        min_value=1, max_value=alerts.MAX_WINDOW_MINUTES, required=False
    )
    slack_workspace = AdminWorkspaceField(allow_null=True, required=False)
    slack_channel = serializers.CharField(max_length=80, allow_blank=True, required=False)
    email_recipients = _recipients_field(required=False)
    enabled = serializers.BooleanField(required=False)


def _as_400(exc: DjangoValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(
        exc.message_dict if hasattr(exc, "error_dict") else exc.messages
    )


# ------------------------------------------------------------------------------
# Views
# ------------------------------------------------------------------------------


# Ids are plain numbers: an unknown id filters to nothing instead of answering 400, so a
# filter never tells whether another organization's rule exists.
class AlertRuleFilter(django_filters.FilterSet):
    organization = django_filters.NumberFilter(field_name="organization_id")

    class Meta:
        model = AlertRule
        fields = ["organization", "kind", "enabled"]


class AlertIncidentFilter(django_filters.FilterSet):
    organization = django_filters.NumberFilter(field_name="organization_id")
    rule = django_filters.NumberFilter(field_name="rule_id")

    class Meta:
        model = AlertIncident
        fields = ["state", "rule", "organization"]


class AlertRuleViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Alert rules of the caller's organizations: members read, admins create, change, delete."""

    serializer_class = AlertRuleOutputSerializer
    permission_classes = [*viewsets.GenericViewSet.permission_classes, OrganizationRolePermission]
    write_role = Role.ADMIN
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    filterset_class = AlertRuleFilter

    def get_queryset(self) -> QuerySet[AlertRule]:
        open_incident = AlertIncident.objects.filter(
            rule=OuterRef("pk"), state=AlertIncidentState.OPEN
        ).values("pk")[:1]
        return (
            alerts.alert_rule_list_for_user(user=self.request.user)
            .annotate(open_incident=Subquery(open_incident))
            .order_by("pk")
        )

    @extend_schema(
        request=AlertRuleCreateInputSerializer, responses={201: AlertRuleOutputSerializer}
    )
    def create(self, request: Request) -> Response:
        data = request.data if hasattr(request.data, "get") else {}
        require_role_of_members(
            user=request.user, organization_id=data.get("organization"), role=Role.ADMIN
        )
        serializer = AlertRuleCreateInputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        try:
            rule = alerts.alert_rule_create(**serializer.validated_data)
        except DjangoValidationError as exc:
            raise _as_400(exc) from exc
        rule = self.get_queryset().get(pk=rule.pk)
        return Response(
            AlertRuleOutputSerializer(rule, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        request=AlertRuleUpdateInputSerializer, responses={200: AlertRuleOutputSerializer}
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        rule = self.get_object()
        serializer = AlertRuleUpdateInputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        try:
            alerts.alert_rule_update(rule=rule, data=serializer.validated_data)
        except DjangoValidationError as exc:
            raise _as_400(exc) from exc
        rule = self.get_queryset().get(pk=rule.pk)
        return Response(AlertRuleOutputSerializer(rule, context={"request": request}).data)

    def perform_destroy(self, instance: AlertRule) -> None:
        alerts.alert_rule_delete(rule=instance)


class AlertIncidentViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Incidents of the caller's organizations, newest first, with their deliveries."""

    serializer_class = AlertIncidentOutputSerializer
    filterset_class = AlertIncidentFilter

    def get_queryset(self) -> QuerySet[AlertIncident]:
        return alerts.alert_incident_list_for_user(user=self.request.user)
