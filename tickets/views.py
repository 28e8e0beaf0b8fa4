"""API views of the core: tickets and organizations."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings

from tickets import selectors, services
from tickets.models import Organization, Role, Source, Ticket
from tickets.permissions import OrganizationRolePermission, require_role_of_members
from tickets.serializers import (
    OrganizationOutputSerializer,
    TicketCreateInputSerializer,
    TicketDetailOutputSerializer,
    TicketOutputSerializer,
    TicketUpdateInputSerializer,
    ticket_output_prefetches,
)


class TicketFilter(django_filters.FilterSet):
    organization = django_filters.NumberFilter(field_name="organization_id")
    organization_slug = django_filters.CharFilter(field_name="organization__slug")

    class Meta:
        model = Ticket
        fields = ["organization", "status", "category", "priority", "source", "needs_review"]


class TicketFilterBackend(DjangoFilterBackend):
    """django-filter's backend, left out when the request has no query parameters at all.

    Every TicketFilter filter is then empty and filters nothing, but building and validating
    its form cost about as much as rendering the page of tickets.
    """

    def filter_queryset(self, request: Request, queryset: Any, view: Any) -> Any:
        if not request.query_params:
            return queryset
        return super().filter_queryset(request, queryset, view)


class OrganizationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Organizations the caller belongs to."""

    serializer_class = OrganizationOutputSerializer

    def get_queryset(self) -> QuerySet[Organization]:
        return selectors.organization_list_for_user(user=self.request.user).order_by("slug")


class TicketViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Tickets of the caller's organizations; a person's label edit trains the next model."""

    permission_classes = [*viewsets.GenericViewSet.permission_classes, OrganizationRolePermission]
    filter_backends: list[Any] = [
        TicketFilterBackend if backend is DjangoFilterBackend else backend
        for backend in api_settings.DEFAULT_FILTER_BACKENDS
    ]
    filterset_class = TicketFilter
    search_fields = ["subject", "body", "requester", "external_id"]
    ordering_fields = ["created_at", "id", "priority", "category"]
    http_method_names = ["get", "post", "patch", "head", "options"]
    # Ids only: tickets/review/ (mlmodels) lives beside the detail route.
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Ticket]:
        queryset = selectors.ticket_list_for_user(user=self.request.user)
        if ticket_output_prefetches:
            queryset = queryset.prefetch_related(*ticket_output_prefetches)
        if self.action == "retrieve":
            queryset = queryset.prefetch_related("messages")
        return queryset

    def get_serializer_class(self) -> Any:
        if self.action == "retrieve":
            return TicketDetailOutputSerializer
        return TicketOutputSerializer

    @extend_schema(request=TicketCreateInputSerializer, responses={201: TicketOutputSerializer})
    def create(self, request: Request) -> Response:
        data = request.data
        # A viewer of the organization is refused (403); an outsider sees "does not exist".
        require_role_of_members(
            user=request.user,
            organization_id=data.get("organization") if hasattr(data, "get") else None,
            role=Role.OPERATOR,
        )
        serializer = TicketCreateInputSerializer(data=data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        ticket, created = services.ticket_create(source=Source.API, **serializer.validated_data)
        output = TicketOutputSerializer(ticket, context={"request": request})
        return Response(
            output.data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    @extend_schema(request=TicketUpdateInputSerializer, responses={200: TicketOutputSerializer})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        ticket = self.get_object()
        serializer = TicketUpdateInputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        allow_new_label = data.pop("allow_new_label", False)
        try:
            ticket = services.ticket_update(
                ticket=ticket, data=data, user=request.user, allow_new_label=allow_new_label
            )
        except services.LabelUnknownError as exc:
            raise ValidationError({exc.field: [str(exc)], "known_labels": exc.known}) from exc
        ticket = self.get_queryset().get(pk=ticket.pk)
        return Response(TicketOutputSerializer(ticket, context={"request": request}).data)
