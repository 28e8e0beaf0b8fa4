"""Input and output serializers of the Slack configuration API."""

from __future__ import annotations

from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from integrations.models import SlackChannel, SlackWorkspace
from integrations.slack import selectors as slack_selectors
from tickets.models import Role
from tickets.serializers import OrganizationWithRoleField, StrictInputSerializer

_SLACK_ID = RegexValidator(r"^[A-Z0-9]{2,32}$", "a Slack id: upper-case letters and digits")
_TOKEN = RegexValidator(r"^xox[a-z]-[A-Za-z0-9-]+$", "a Slack token (xoxb-…)")


@extend_schema_field(OpenApiTypes.INT)
class AdminWorkspaceField(serializers.PrimaryKeyRelatedField):
    """A workspace of an organization the caller administers (its token is not loaded)."""

    def get_queryset(self) -> Any:
        workspaces = slack_selectors.slack_workspace_list_for_user(
            user=self.context["request"].user
        )
        return workspaces.defer("bot_token")


class SlackWorkspaceOutputSerializer(serializers.ModelSerializer):
    organization_slug = serializers.CharField(source="organization.slug", read_only=True)
    has_bot_token = serializers.SerializerMethodField()
    verified = serializers.BooleanField(read_only=True)
    token_rotates = serializers.SerializerMethodField()

    class Meta:
        model = SlackWorkspace
        fields = [
            "id",
            "organization",
            "organization_slug",
            "team_id",
            "name",
            "enabled",
            "has_bot_token",
            "verified",
            "verified_team_id",
            "verified_at",
            "bot_user_id",
            "installed_via_oauth",
            "installed_at",
            "scopes",
            "token_rotates",
            "disabled_reason",
            "disabled_at",
            "last_sync_at",
            "last_error",
            "last_error_at",
            "created_at",
            "updated_at",
        ]

    def get_has_bot_token(self, workspace: SlackWorkspace) -> bool:
        return bool(workspace.bot_token)

    def get_token_rotates(self, workspace: SlackWorkspace) -> bool:
        return workspace.bot_token_expires_at is not None


class SlackWorkspaceCreateInputSerializer(serializers.Serializer):
    organization = OrganizationWithRoleField(min_role=Role.ADMIN)
    team_id = serializers.CharField(max_length=32, validators=[_SLACK_ID])
    name = serializers.CharField(max_length=200, allow_blank=True, default="")
    bot_token = serializers.CharField(
        max_length=500, write_only=True, trim_whitespace=True, validators=[_TOKEN]
    )
    enabled = serializers.BooleanField(default=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # Taken: proven by any organization, or typed in this one already. An unproven
        # row elsewhere (from before tokens were verified) does not block the real owner.
        team_id = attrs["team_id"]
        taken = SlackWorkspace.objects.filter(
            verified_team_id=team_id
        ) | SlackWorkspace.objects.filter(organization=attrs["organization"], team_id=team_id)
        if taken.exists():
            raise serializers.ValidationError({"team_id": "this workspace is already connected"})
        return attrs


class SlackWorkspaceUpdateInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    bot_token = serializers.CharField(
        max_length=500, write_only=True, required=False, validators=[_TOKEN]
    )
    enabled = serializers.BooleanField(required=False)


class SlackChannelOutputSerializer(serializers.ModelSerializer):
    team_id = serializers.CharField(source="workspace.team_id", read_only=True)
    organization = serializers.IntegerField(source="workspace.organization_id", read_only=True)
    organization_slug = serializers.CharField(source="workspace.organization.slug", read_only=True)
    sync_in_progress = serializers.SerializerMethodField()

    class Meta:
        model = SlackChannel
        fields = [
            "id",
            "workspace",
            "team_id",
            "organization",
            "organization_slug",
            "channel_id",
            "name",
            "enabled",
            "latest_ts",
            "sync_in_progress",
            "last_sync_at",
            "last_error",
            "last_error_at",
            "created_at",
            "updated_at",
        ]

    def get_sync_in_progress(self, channel: SlackChannel) -> bool:
        """A history pass stopped halfway (its cursor is saved; the next sync resumes it)."""
        return bool(channel.sync_cursor)


class SlackChannelCreateInputSerializer(serializers.Serializer):
    workspace = AdminWorkspaceField()
    channel_id = serializers.CharField(max_length=32, validators=[_SLACK_ID])
    name = serializers.CharField(max_length=200, allow_blank=True, default="")
    enabled = serializers.BooleanField(default=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if SlackChannel.objects.filter(
            workspace=attrs["workspace"], channel_id=attrs["channel_id"]
        ).exists():
            raise serializers.ValidationError(
                {"channel_id": "this channel is already watched in the workspace"}
            )
        return attrs


class SlackChannelUpdateInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)
