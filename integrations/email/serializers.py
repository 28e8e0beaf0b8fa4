"""Mailbox API serializers: the password is write-only, the location needs it again."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from integrations.email import selectors as email_selectors
from integrations.models import InboundEmail, Mailbox, MailboxSecurity
from tickets.models import Role
from tickets.serializers import OrganizationWithRoleField, StrictInputSerializer


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


class _MailboxFields(StrictInputSerializer):
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


class InboundEmailOutputSerializer(serializers.ModelSerializer):
    """A ledger row: what one message of the mailbox became (``too_large``: not downloaded)."""

    class Meta:
        model = InboundEmail
        fields = [
            "id",
            "mailbox",
            "uidvalidity",
            "uid",
            "state",
            "reason",
            "subject",
            "from_address",
            "message_id",
            "sent_at",
            "size",
            "body_truncated",
            "ticket",
            "received_at",
        ]


class EmailSyncInputSerializer(serializers.Serializer):
    organization_id = serializers.IntegerField()


_TASK_ENQUEUED = inline_serializer("EmailTaskEnqueued", {"task_id": serializers.CharField()})
