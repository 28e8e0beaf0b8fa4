"""Mailbox configuration API (organization admins) and the e-mail sync trigger (operators).

The IMAP password is write-only: accepted on create and update, stored encrypted,
never part of any response (``has_password`` says whether one is set).
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations.email import selectors as email_selectors
from integrations.email import services as email_services
from integrations.email.serializers import (
    _TASK_ENQUEUED,
    InboundEmailOutputSerializer,
    MailboxCreateInputSerializer,
    MailboxOutputSerializer,
    MailboxUpdateInputSerializer,
    OAuthStartOutputSerializer,
)
from integrations.models import InboundEmail, Mailbox
from integrations.oauth_state import error_code
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
    throttle_scope: str | None = None  # test-connection's own limit (zenith/throttles.py)

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
    @action(
        detail=True,
        methods=["post"],
        url_path="test-connection",
        throttle_scope="mailbox_test_connection",
    )
    def test_connection(self, request: Request, pk: str | None = None) -> Response:
        """Log in and look at the folders, in a task on the sync queue: 202 with its id.

        The outcome (``ok``, ``error_kind``: auth, tls, timeout, refused, not_imap, ...)
        is the task's result at ``tasks/status/{task_id}``.
        """
        task_id = email_services.mailbox_test_connection_enqueue(
            mailbox=self.get_object(), triggered_by=triggered_by_label(request.user)
        )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: OAuthStartOutputSerializer})
    @action(detail=True, methods=["post"], url_path="oauth/start")
    def oauth_start(self, request: Request, pk: str | None = None) -> Response:
        """Start OAuth2 consent: open ``authorize_url``; the provider returns to the callback."""
        mailbox = self.get_object()
        try:
            url = email_services.mailbox_oauth_start(
                mailbox=mailbox, user=request.user, redirect_uri=_oauth_redirect_uri(request)
            )
        except email_services.MailboxOAuthError as exc:
            raise serializers.ValidationError({"auth_method": [str(exc)]}) from exc
        return Response({"authorize_url": url})

    @extend_schema(request=None, responses={202: _TASK_ENQUEUED})
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: str | None = None) -> Response:
        """Poll this mailbox now: 202 with the task id."""
        task_id = email_services.mailbox_poll_enqueue(
            mailbox=self.get_object(), triggered_by=triggered_by_label(request.user)
        )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)


def _oauth_redirect_uri(request: Request) -> str:
    """The callback URL registered with the providers (setting, or this server's own)."""
    return settings.ZENITH_OAUTH_REDIRECT_URI or request.build_absolute_uri(
        reverse("mailbox-oauth-callback")
    )


# Providers' authorization codes run to about 1-2 KB (Microsoft's are the longest).
MAX_CODE_CHARS = 4096


class MailboxOAuthCallbackView(APIView):
    """Where the provider sends the admin back: stores the grant of the mailbox that the
    (single-use, 10-minute) state names, if this same user started it."""

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, required=True),
            OpenApiParameter("code", str),
            OpenApiParameter("error", str),
        ],
        responses={200: MailboxOutputSerializer},
    )
    def get(self, request: Request) -> Response:
        state = request.query_params.get("state", "")
        if not state:
            raise serializers.ValidationError({"state": ["missing"]})
        if error := request.query_params.get("error"):
            raise serializers.ValidationError(
                {"error": [f"the provider did not grant: {error_code(error)}"]}
            )
        code = request.query_params.get("code", "")
        if not code:
            raise serializers.ValidationError({"code": ["missing"]})
        if len(code) > MAX_CODE_CHARS or not code.isprintable():
            raise serializers.ValidationError(
                {"code": [f"not an authorization code (printable, at most {MAX_CODE_CHARS})"]}
            )
        try:
            mailbox = email_services.mailbox_oauth_complete(
                state=state, code=code, user=request.user
            )
        except email_services.MailboxOAuthError as exc:
            raise serializers.ValidationError({"state": [str(exc)]}) from exc
        return Response(MailboxOutputSerializer(mailbox, context={"request": request}).data)


class InboundEmailViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The inbound ledger of the organizations the caller administers: every message fetched,
    what became of it (ticket, follow-up, duplicate, rejected...) and its original."""

    serializer_class = InboundEmailOutputSerializer
    filterset_fields = ["organization", "mailbox", "state"]

    def get_queryset(self) -> QuerySet[InboundEmail]:
        return email_selectors.inbound_email_list_for_user(user=self.request.user)

    @extend_schema(responses={(200, "message/rfc822"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def raw(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The original message as received (.eml), while its retention period lasts."""
        row = self.get_object()
        data = email_services.raw_mail_read(row=row)
        if data is None:
            raise NotFound("the original of this message is no longer kept")
        response = HttpResponse(data, content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="message-{row.pk}.eml"'
        return response
