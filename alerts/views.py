"""Alerts API: rules (organization admins configure, members read) and incidents (members read).

Incidents carry their deliveries: each message, where it went, and how sending it went.
"""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import OuterRef, QuerySet, Subquery
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from alerts import selectors, services
from alerts.models import AlertIncident, AlertIncidentState, AlertRule
from alerts.serializers import (
    AlertIncidentOutputSerializer,
    AlertRuleCreateInputSerializer,
    AlertRuleOutputSerializer,
    AlertRuleUpdateInputSerializer,
)
from tickets.models import Role
from tickets.permissions import OrganizationRolePermission, require_role_of_members


def _as_400(exc: DjangoValidationError) -> serializers.ValidationError:
    return serializers.ValidationError(
        exc.message_dict if hasattr(exc, "error_dict") else exc.messages
    )


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
            selectors.alert_rule_list_for_user(user=self.request.user)
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
            rule = services.alert_rule_create(**serializer.validated_data)
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
            services.alert_rule_update(rule=rule, data=serializer.validated_data)
        except DjangoValidationError as exc:
            raise _as_400(exc) from exc
        rule = self.get_queryset().get(pk=rule.pk)
        return Response(AlertRuleOutputSerializer(rule, context={"request": request}).data)

    def perform_destroy(self, instance: AlertRule) -> None:
        services.alert_rule_delete(rule=instance)


class AlertIncidentViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Incidents of the caller's organizations, newest first, with their deliveries."""

    serializer_class = AlertIncidentOutputSerializer
    filterset_class = AlertIncidentFilter

    def get_queryset(self) -> QuerySet[AlertIncident]:
        return selectors.alert_incident_list_for_user(user=self.request.user)
