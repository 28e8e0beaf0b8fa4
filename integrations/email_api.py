"""Mailbox configuration API (organization admins) and the e-mail sync trigger (operators).

The IMAP password is write-only: accepted on create and update, stored encrypted,
never part of any response (``has_password`` says whether one is set).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations import email_selectors, email_services
from integrations.models import Mailbox, MailboxSecurity
from taskops.services import triggered_by_label
from tickets.models import Role
from tickets.permissions import organization_for_role, require_role_of_members
from tickets.serializers import OrganizationWithRoleField

# ------------------------------------------------------------------------------
# Serializers
# ------------------------------------------------------------------------------


class _StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, naming them (e.g. ``organization`` in a PATCH)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: "this field cannot be set here" for name in sorted(unknown)}
            )
        return attrs


def _folder_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(max_length=255, trim_whitespace=True, **kwargs)


class MailboxOutputSerializer(serializers.ModelSerializer):
    organization_slug = serializers.CharField(source="organization.slug", read_only=True)
    has_password = serializers.SerializerMethodField()
    sync_in_progress = serializers.SerializerMethodField()

    class Meta:
        model = Mailbox
        fields = [
            "id",
            "organization",
            "organization_slug",
            "name",
            "host",
            "port",
            "security",
            "username",
            "has_password",
            "folder",
            "processed_folder",
            "enabled",
            "uidvalidity",
            "last_uid",
            "sync_in_progress",
            "last_polled_at",
            "last_success_at",
            "last_error",
            "last_error_kind",
            "last_error_at",
            "created_at",
            "updated_at",
        ]

    def get_has_password(self, mailbox: Mailbox) -> bool:
        return email_selectors.mailbox_has_password(mailbox=mailbox)

    def get_sync_in_progress(self, mailbox: Mailbox) -> bool:
        return email_selectors.mailbox_sync_in_progress(mailbox=mailbox)


class _MailboxFields(_StrictSerializer):
    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        instance: Mailbox | None = self.context.get("mailbox")
        folder = attrs.get("folder", instance.folder if instance else "INBOX")
        processed = attrs.get("processed_folder", instance.processed_folder if instance else "")
        if processed and processed == folder:
            raise serializers.ValidationError(
                {"processed_folder": "must differ from folder (mail would never leave it)"}
            )
        organization = attrs.get("organization", instance.organization if instance else None)
        name = attrs.get("name")
        if organization is not None and name is not None:
            clash = Mailbox.objects.filter(organization=organization, name=name)
            if instance is not None:
                clash = clash.exclude(pk=instance.pk)
            if clash.exists():
                raise serializers.ValidationError(
                    {"name": "the organization already has a mailbox with this name"}
                )
        return attrs


class MailboxCreateInputSerializer(_MailboxFields):
    organization = OrganizationWithRoleField(min_role=Role.ADMIN)
    name = serializers.CharField(max_length=200)
    host = serializers.CharField(max_length=255)
    port = serializers.IntegerField(min_value=1, max_value=65535, default=993)
    security = serializers.ChoiceField(choices=MailboxSecurity.values, default="ssl")
    username = serializers.CharField(max_length=255)
    password = serializers.CharField(
        max_length=1000, write_only=True, trim_whitespace=False, style={"input_type": "password"}
    )
    folder = _folder_field(default="INBOX")
    processed_folder = _folder_field(allow_blank=True, default="")
    enabled = serializers.BooleanField(default=True)


class MailboxUpdateInputSerializer(_MailboxFields):
    name = serializers.CharField(max_length=200, required=False)
    host = serializers.CharField(max_length=255, required=False)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False)
    security = serializers.ChoiceField(choices=MailboxSecurity.values, required=False)
    username = serializers.CharField(max_length=255, required=False)
    password = serializers.CharField(
        max_length=1000,
        write_only=True,
        trim_whitespace=False,
        required=False,
        style={"input_type": "password"},
    )
    folder = _folder_field(required=False)
    processed_folder = _folder_field(allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)


class ConnectionTestOutputSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error_kind = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    uidvalidity = serializers.IntegerField(allow_null=True)
    message_count = serializers.IntegerField(allow_null=True)
    processed_folder_exists = serializers.BooleanField(allow_null=True)


class EmailSyncInputSerializer(serializers.Serializer):
    organization_id = serializers.IntegerField()


_TASK_ENQUEUED = inline_serializer("EmailTaskEnqueued", {"task_id": serializers.CharField()})


# ------------------------------------------------------------------------------
# Views
# ------------------------------------------------------------------------------


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
        mailbox = email_services.mailbox_create(**serializer.validated_data)
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
        return Response(MailboxOutputSerializer(mailbox, context={"request": request}).data)

    @extend_schema(request=None, responses={200: ConnectionTestOutputSerializer})
    @action(
        detail=True,
        methods=["post"],
        url_path="test-connection",
        throttle_scope="mailbox_test_connection",
    )
    def test_connection(self, request: Request, pk: str | None = None) -> Response:
        """Log in and look at the folders; nothing on the server changes."""
        result = email_services.mailbox_test_connection(mailbox=self.get_object())
        return Response(ConnectionTestOutputSerializer(result).data)

    @extend_schema(request=None, responses={202: _TASK_ENQUEUED})
    @action(detail=True, methods=["post"])
    def sync(self, request: Request, pk: str | None = None) -> Response:
        """Poll this mailbox now: 202 with the task id."""
        task_id = email_services.mailbox_poll_enqueue(
            mailbox=self.get_object(), triggered_by=triggered_by_label(request.user)
        )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)


class EmailSyncTriggerView(APIView):
    """POST {"organization_id"}: sync every enabled mailbox of the organization; 202 {"task_id"}.

    Operators may trigger; an organization the caller does not belong to is 404.
    """

    @extend_schema(request=EmailSyncInputSerializer, responses={202: _TASK_ENQUEUED})
    def post(self, request: Request) -> Response:
        serializer = EmailSyncInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        organization = organization_for_role(
            user=request.user,
            organization_id=serializer.validated_data["organization_id"],
            role=Role.OPERATOR,
        )
        task_id = email_services.email_sync_enqueue(
            organization=organization, triggered_by=triggered_by_label(request.user)
        )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)
