"""Mailbox API serializers: the password is write-only, the location needs it again."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from integrations.email import selectors as email_selectors
from integrations.email.oauth import PROVIDER_IMAP_HOSTS
from integrations.models import (
    InboundEmail,
    Mailbox,
    MailboxAuthMethod,
    MailboxSecurity,
    OAuthProviderName,
)
from tickets.models import Role
from tickets.serializers import OrganizationWithRoleField, StrictInputSerializer


def _folder_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(max_length=255, trim_whitespace=True, **kwargs)


class MailboxOutputSerializer(serializers.ModelSerializer):
    organization_slug = serializers.CharField(source="organization.slug", read_only=True)
    has_password = serializers.SerializerMethodField()
    has_oauth_grant = serializers.SerializerMethodField()
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
            "auth_method",
            "oauth_provider",
            "oauth_authorize_url",
            "oauth_token_url",
            "oauth_scopes",
            "oauth_account",
            "oauth_status",
            "oauth_status_reason",
            "has_oauth_grant",
            "created_at",
            "updated_at",
        ]

    def get_has_oauth_grant(self, mailbox: Mailbox) -> bool:
        return bool(mailbox.oauth_refresh_token)

    def get_has_password(self, mailbox: Mailbox) -> bool:
        return email_selectors.mailbox_has_password(mailbox=mailbox)

    def get_sync_in_progress(self, mailbox: Mailbox) -> bool:
        return email_selectors.mailbox_sync_in_progress(mailbox=mailbox)


class _MailboxFields(StrictInputSerializer):
    auth_method = serializers.ChoiceField(choices=MailboxAuthMethod.values, required=False)
    oauth_provider = serializers.ChoiceField(
        choices=[choice for choice in OAuthProviderName.values if choice], required=False
    )
    oauth_authorize_url = serializers.URLField(max_length=500, required=False)
    oauth_token_url = serializers.URLField(max_length=500, required=False)
    oauth_scopes = serializers.CharField(max_length=500, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        instance: Mailbox | None = self.context.get("mailbox")
        folder = attrs.get("folder", instance.folder if instance else "INBOX")
        processed = attrs.get("processed_folder", instance.processed_folder if instance else "")
        if processed and processed == folder:
            raise serializers.ValidationError(
                {"processed_folder": "must differ from folder (mail would never leave it)"}
            )
        self._validate_auth(attrs, instance)
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

    def _validate_auth(self, attrs: dict[str, Any], instance: Mailbox | None) -> None:
        """Password mailboxes need a password; OAuth2 ones a provider (and for ``generic``,
        its endpoints and scopes), whose client credentials come from settings."""

        def value(name: str) -> Any:
            return attrs.get(name, getattr(instance, name) if instance else "")

        method = value("auth_method") or MailboxAuthMethod.PASSWORD
        if method == MailboxAuthMethod.PASSWORD:
            if instance is None and not attrs.get("password"):
                raise serializers.ValidationError({"password": "required for password login"})
            return
        provider = value("oauth_provider")
        if not provider:
            raise serializers.ValidationError({"oauth_provider": "required for auth_method oauth2"})
        if provider == OAuthProviderName.GENERIC:
            for name in ("oauth_authorize_url", "oauth_token_url", "oauth_scopes"):
                if not value(name):
                    raise serializers.ValidationError({name: "required for a generic provider"})
            if not settings.ZENITH_OAUTH_ALLOW_HTTP:
                for name in ("oauth_authorize_url", "oauth_token_url"):
                    if not str(value(name)).startswith("https://"):
                        raise serializers.ValidationError({name: "must be an https:// URL"})
        elif instance is None and not attrs.get("host"):
            attrs["host"] = PROVIDER_IMAP_HOSTS[provider]
        if instance is None and not attrs.get("host"):
            raise serializers.ValidationError({"host": "This field is required."})


class MailboxCreateInputSerializer(_MailboxFields):
    organization = OrganizationWithRoleField(min_role=Role.ADMIN)
    name = serializers.CharField(max_length=200)
    host = serializers.CharField(max_length=255, required=False)
    port = serializers.IntegerField(min_value=1, max_value=65535, default=993)
    security = serializers.ChoiceField(choices=MailboxSecurity.values, default="ssl")
    username = serializers.CharField(max_length=255)
    password = serializers.CharField(
        max_length=1000,
        write_only=True,
        trim_whitespace=False,
        required=False,
        style={"input_type": "password"},
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


class InboundEmailOutputSerializer(serializers.ModelSerializer):
    organization_slug = serializers.CharField(source="organization.slug", read_only=True)
    mailbox_name = serializers.CharField(source="mailbox.name", read_only=True)
    has_raw = serializers.SerializerMethodField()

    class Meta:
        model = InboundEmail
        fields = [
            "id",
            "organization",
            "organization_slug",
            "mailbox",
            "mailbox_name",
            "uidvalidity",
            "uid",
            "message_id",
            "state",
            "reason",
            "subject",
            "from_address",
            "sent_at",
            "size",
            "body_truncated",
            "ticket",
            "has_raw",
            "flagged_at",
            "received_at",
        ]

    def get_has_raw(self, row: InboundEmail) -> bool:
        return bool(row.raw_file)


class ConnectionTestOutputSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error_kind = serializers.CharField(allow_null=True)
    error = serializers.CharField(allow_null=True)
    uidvalidity = serializers.IntegerField(allow_null=True)
    message_count = serializers.IntegerField(allow_null=True)
    processed_folder_exists = serializers.BooleanField(allow_null=True)


class OAuthStartOutputSerializer(serializers.Serializer):
    authorize_url = serializers.URLField()


class EmailSyncInputSerializer(serializers.Serializer):
    organization_id = serializers.IntegerField()


_TASK_ENQUEUED = inline_serializer("EmailTaskEnqueued", {"task_id": serializers.CharField()})
