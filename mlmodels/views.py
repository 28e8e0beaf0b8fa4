"""API of the model registry: versions, activation, and the ML task endpoints."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mlmodels import selectors, services
from mlmodels.models import ModelStatus, ModelVersion, Target
from mlmodels.receivers import PREDICTIONS_PREFETCH
from mlmodels.serializers import (
    BatchClassifyInputSerializer,
    ClassifyTicketInputSerializer,
    ModelVersionOutputSerializer,
    ReviewAcceptInputSerializer,
    ReviewCorrectInputSerializer,
    ReviewTicketOutputSerializer,
    TaskEnqueuedOutputSerializer,
    TrainModelInputSerializer,
)
from taskops.services import task_enqueue, triggered_by_label
from tickets.models import Organization, Role, Ticket
from tickets.permissions import OrganizationRolePermission, require_role
from tickets.selectors import organization_list_for_user, ticket_list_for_user
from tickets.services import LabelUnknownError


class ModelVersionFilter(django_filters.FilterSet):
    organization = django_filters.NumberFilter(field_name="organization_id")
    organization_slug = django_filters.CharFilter(field_name="organization__slug")
    target = django_filters.ChoiceFilter(choices=Target.choices)
    status = django_filters.ChoiceFilter(choices=ModelStatus.choices)

    class Meta:
        model = ModelVersion
        fields = ["organization", "organization_slug", "target", "status"]


class ModelVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Model versions of the caller's organizations with their metrics; admins activate them."""

    serializer_class = ModelVersionOutputSerializer
    permission_classes = [*viewsets.GenericViewSet.permission_classes, OrganizationRolePermission]
    write_role = Role.ADMIN
    filterset_class = ModelVersionFilter
    search_fields: list[str] = []
    ordering_fields = ["created_at", "version", "id"]
    ordering = ["-created_at", "-id"]

    def get_queryset(self) -> QuerySet[ModelVersion]:
        # The held-out ticket ids are bookkeeping for the next training, not API output.
        return selectors.model_version_list_for_user(user=self.request.user).defer(
            "test_ticket_ids"
        )

    @extend_schema(request=None, responses={200: ModelVersionOutputSerializer})
    @action(detail=True, methods=["post"])
    def activate(self, request: Request, pk: str | None = None) -> Response:
        """Serve this version: a manual promotion, or a roll back to an earlier one."""
        version = self.get_object()
        try:
            version = services.model_activate(
                version=version, activated_by=triggered_by_label(request.user)
            )
        except services.ModelStateError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(version).data)


def _organization_for_operator(request: Request, organization_id: int) -> Organization:
    """The organization if the caller may act on it: 404 when not theirs, 403 below operator."""
    organization = organization_list_for_user(user=request.user).filter(pk=organization_id).first()
    if organization is None:
        raise NotFound(f"organization {organization_id} not found")
    require_role(user=request.user, organization=organization, role=Role.OPERATOR)
    return organization


def _accepted(task_id: str) -> Response:
    return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)


class ClassifyTicketView(APIView):
    """Classify one ticket with its organization's active models (operator role)."""

    @extend_schema(
        request=ClassifyTicketInputSerializer, responses={202: TaskEnqueuedOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = ClassifyTicketInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ticket_id = serializer.validated_data["ticket_id"]
        ticket: Ticket = get_object_or_404(ticket_list_for_user(user=request.user), pk=ticket_id)
        require_role(user=request.user, organization=ticket.organization_id, role=Role.OPERATOR)
        task_id = task_enqueue(
            name=services.CLASSIFY_TASK,
            kwargs={"ticket_id": ticket.pk, "organization_id": ticket.organization_id},
            triggered_by=triggered_by_label(request.user),
        )
        return _accepted(task_id)


class BatchClassifyView(APIView):
    """Classify the given tickets, or all unclassified ones, of an organization (operator role)."""

    @extend_schema(
        request=BatchClassifyInputSerializer, responses={202: TaskEnqueuedOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = BatchClassifyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = serializer.validated_data
        organization = _organization_for_operator(request, data["organization_id"])
        kwargs: dict[str, Any] = {"organization_id": organization.pk}
        if "ticket_ids" in data:
            wanted = sorted(set(data["ticket_ids"]))
            found = set(
                Ticket.objects.filter(organization=organization, pk__in=wanted).values_list(
                    "pk", flat=True
                )
            )
            missing = [pk for pk in wanted if pk not in found]
            if missing:
                shown = ", ".join(str(pk) for pk in missing[:20])
                raise NotFound(f"ticket_ids: not found in organization {organization.pk}: {shown}")
            kwargs["ticket_ids"] = wanted
        task_id = task_enqueue(
            name=services.BATCH_CLASSIFY_TASK,
            kwargs=kwargs,
            triggered_by=triggered_by_label(request.user),
        )
        return _accepted(task_id)


class TrainModelView(APIView):
    """Train new versions of an organization's models (operator role); the gate decides."""

    @extend_schema(request=TrainModelInputSerializer, responses={202: TaskEnqueuedOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = TrainModelInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data: dict[str, Any] = serializer.validated_data
        organization = _organization_for_operator(request, data["organization_id"])
        kwargs: dict[str, Any] = {"organization_id": organization.pk}
        if "targets" in data:
            kwargs["targets"] = list(dict.fromkeys(data["targets"]))
        task_id = task_enqueue(
            name=services.TRAIN_TASK,
            kwargs=kwargs,
            triggered_by=triggered_by_label(request.user),
        )
        return _accepted(task_id)


class ReviewQueueViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Tickets whose model label is unsure, most uncertain first; operators accept or correct.

    `GET tickets/review/?organization=ID` lists them (members); `POST
    tickets/review/{id}/accept` `{"target"}` keeps the model's label and `POST
    tickets/review/{id}/correct` `{"target", "label", "allow_new_label"?}` replaces it.
    Either records the label as a person's (the next training's label) and clears
    needs_review.
    """

    serializer_class = ReviewTicketOutputSerializer
    permission_classes = [*viewsets.GenericViewSet.permission_classes, OrganizationRolePermission]
    write_role = Role.OPERATOR
    filter_backends: list[Any] = []
    lookup_value_regex = r"\d+"

    def get_queryset(self) -> QuerySet[Ticket]:
        organization = self.request.query_params.get("organization")
        if organization is not None and not organization.isdigit():
            raise ValidationError({"organization": ["an organization id (a number)"]})
        if self.action == "list":
            queryset = selectors.review_queue_for_user(
                user=self.request.user,
                organization_id=int(organization) if organization else None,
            )
        else:
            queryset = ticket_list_for_user(user=self.request.user)
        return queryset.prefetch_related(PREDICTIONS_PREFETCH)

    def _decide(
        self, request: Request, ticket: Any, *, label: str | None, target: str, allow: bool
    ) -> Response:
        try:
            services.prediction_review(
                ticket=ticket,
                target=target,
                user=request.user,
                label=label,
                allow_new_label=allow,
            )
        except LabelUnknownError as exc:
            raise ValidationError({"label": [str(exc)], "known_labels": exc.known}) from exc
        except services.ReviewError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from exc
        ticket = (
            ticket_list_for_user(user=request.user)
            .prefetch_related(PREDICTIONS_PREFETCH)
            .get(pk=ticket.pk)
        )
        return Response(self.get_serializer(ticket).data)

    @extend_schema(
        request=ReviewAcceptInputSerializer, responses={200: ReviewTicketOutputSerializer}
    )
    @action(detail=True, methods=["post"])
    def accept(self, request: Request, pk: str | None = None) -> Response:
        """Keep the model's label for `target`: it becomes a person's label."""
        ticket = self.get_object()  # another organization's ticket is 404, whatever the body
        serializer = ReviewAcceptInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._decide(
            request, ticket, label=None, target=serializer.validated_data["target"], allow=False
        )

    @extend_schema(
        request=ReviewCorrectInputSerializer, responses={200: ReviewTicketOutputSerializer}
    )
    @action(detail=True, methods=["post"])
    def correct(self, request: Request, pk: str | None = None) -> Response:
        """Replace the model's label for `target` with a person's."""
        ticket = self.get_object()  # another organization's ticket is 404, whatever the body
        serializer = ReviewCorrectInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        return self._decide(
            request,
            ticket,
            label=data["label"],
            target=data["target"],
            allow=data["allow_new_label"],
        )
