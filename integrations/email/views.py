"""Mailbox configuration API (organization admins) and the e-mail sync trigger (operators).

The IMAP password is write-only: accepted on create and update, stored encrypted,
never part of any response (``has_password`` says whether one is set).
"""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from integrations.email import selectors as email_selectors
from integrations.email import services as email_services
from integrations.email.serializers import (
    _TASK_ENQUEUED,
    InboundEmailOutputSerializer,
    MailboxCreateInputSerializer,
    MailboxOutputSerializer,
    MailboxUpdateInputSerializer,
)
from integrations.models import InboundEmailState, Mailbox
from taskops.services import triggered_by_label
from tickets.models import Role
from tickets.permissions import require_role_of_members


class MailboxViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """IMAP mailboxes of the organizations the caller administers; passwords are write-only."""

    serializer_class = MailboxOutputSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]
    filterset_fields = ["organization", "enabled"]

    def get_queryset(self) -> QuerySet[Mailbox]:
        return email_selectors.mailbox_list_for_user(user=self.request.user).order_by("pk")

    @extend_schema(request=MailboxCreateInputSerializer, responses={201: MailboxOutputSerializer})
    def create(self, request: Request) -> Response:
        data = request.data if hasattr(request.data, "get") else {}
        require_role_of_members(
            user=request.user, organization_id=data.get("organization"), role=Role.ADMIN
        )
        serializer = MailboxCreateInputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        try:
            mailbox = email_services.mailbox_create(**serializer.validated_data)
        except email_services.MailboxDestinationRefused as exc:
            raise serializers.ValidationError({exc.field: [exc.reason]}) from exc
        return Response(
            MailboxOutputSerializer(mailbox, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(request=MailboxUpdateInputSerializer, responses={200: MailboxOutputSerializer})
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        mailbox = self.get_object()
        serializer = MailboxUpdateInputSerializer(
            data=request.data, context={"request": request, "mailbox": mailbox}
        )
        serializer.is_valid(raise_exception=True)
        try:
            mailbox = email_services.mailbox_update(mailbox=mailbox, data=serializer.validated_data)
        except email_services.MailboxLocationLocked as exc:
            raise serializers.ValidationError({name: [str(exc)] for name in exc.fields}) from exc
        except email_services.MailboxPasswordRequired as exc:
            raise serializers.ValidationError({"password": [str(exc)]}) from exc
        except email_services.MailboxDestinationRefused as exc:
            raise serializers.ValidationError({exc.field: [exc.reason]}) from exc
        return Response(MailboxOutputSerializer(mailbox, context={"request": request}).data)

    @extend_schema(request=None, responses={202: _TASK_ENQUEUED})
    @action(detail=True, methods=["post"], url_path="test-connection")
    def test_connection(self, request: Request, pk: str | None = None) -> Response:
        """Log in and look at the folders, in a task on the sync queue: 202 with its id.

        The outcome (``ok``, ``error_kind``: auth, tls, timeout, refused, not_imap, ...)
        is the task's result at ``tasks/status/{task_id}``.
        """
        task_id = email_services.mailbox_test_connection_enqueue(
            mailbox=self.get_object(), triggered_by=triggered_by_label(request.user)
        )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: InboundEmailOutputSerializer(many=True)})
    @action(detail=True, methods=["get"])
    def messages(self, request: Request, pk: str | None = None) -> Response:
        """The mailbox's ledger, newest first (``?state=too_large``, ``rejected``, …)."""
        mailbox = self.get_object()
        state = request.query_params.get("state") or None
        if state is not None and state not in InboundEmailState.values:
            raise serializers.ValidationError({"state": [f"one of {InboundEmailState.values}"]})
        rows = email_selectors.inbound_email_list(
            organization=mailbox.organization, mailbox=mailbox, state=state
        ).order_by("-received_at", "-id")
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(InboundEmailOutputSerializer(page, many=True).data)

    @extend_schema(request=None, responses={202: _TASK_ENQUEUED})
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: str | None = None) -> Response:
        """Poll this mailbox now: 202 with the task id."""
        task_id = email_services.mailbox_poll_enqueue(
            mailbox=self.get_object(), triggered_by=triggered_by_label(request.user)
        )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)
