"""Slack configuration API (organization admins) and the manual sync trigger (operators)."""

from __future__ import annotations

from django.db import IntegrityError
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from integrations.models import SlackChannel, SlackWorkspace
from integrations.slack import selectors as slack_selectors
from integrations.slack import services as slack_services
from integrations.slack.client import SlackTransientError
from integrations.slack.serializers import (
    SlackChannelCreateInputSerializer,
    SlackChannelOutputSerializer,
    SlackChannelUpdateInputSerializer,
    SlackWorkspaceCreateInputSerializer,
    SlackWorkspaceOutputSerializer,
    SlackWorkspaceUpdateInputSerializer,
)
from tickets.models import Role
from tickets.permissions import require_role_of_members


class SlackUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Slack could not be reached to verify the bot token; try again later."
    default_code = "slack_unavailable"


class SlackWorkspaceViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Slack workspaces of the organizations the caller administers; tokens are write-only."""

    serializer_class = SlackWorkspaceOutputSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]
    filterset_fields = ["organization", "enabled", "team_id"]

    def get_queryset(self) -> QuerySet[SlackWorkspace]:
        return slack_selectors.slack_workspace_list_for_user(user=self.request.user).order_by("pk")

    @extend_schema(
        request=SlackWorkspaceCreateInputSerializer, responses={201: SlackWorkspaceOutputSerializer}
    )
    def create(self, request: Request) -> Response:
        data = request.data if hasattr(request.data, "get") else {}
        require_role_of_members(
            user=request.user, organization_id=data.get("organization"), role=Role.ADMIN
        )
        serializer = SlackWorkspaceCreateInputSerializer(
            data=request.data, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        try:
            workspace = slack_services.slack_workspace_create(**serializer.validated_data)
        except slack_services.SlackTokenRejected as exc:
            raise serializers.ValidationError({"bot_token": [exc.reason]}) from exc
        except SlackTransientError as exc:
            raise SlackUnavailable() from exc
        except IntegrityError as exc:
            raise serializers.ValidationError(
                {"team_id": "this workspace is already connected"}
            ) from exc
        output = SlackWorkspaceOutputSerializer(workspace, context={"request": request})
        return Response(output.data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=SlackWorkspaceUpdateInputSerializer, responses={200: SlackWorkspaceOutputSerializer}
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        workspace = self.get_object()
        serializer = SlackWorkspaceUpdateInputSerializer(
            data=request.data, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        try:
            workspace = slack_services.slack_workspace_update(
                workspace=workspace, data=serializer.validated_data
            )
        except slack_services.SlackTokenRejected as exc:
            raise serializers.ValidationError({"bot_token": [exc.reason]}) from exc
        except SlackTransientError as exc:
            raise SlackUnavailable() from exc
        return Response(
            SlackWorkspaceOutputSerializer(workspace, context={"request": request}).data
        )


class SlackChannelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Watched channels of the caller's administered workspaces, with their sync state."""

    serializer_class = SlackChannelOutputSerializer
    http_method_names = ["get", "post", "patch", "head", "options"]
    filterset_fields = ["workspace", "enabled", "channel_id"]

    def get_queryset(self) -> QuerySet[SlackChannel]:
        return slack_selectors.slack_channel_list_for_user(user=self.request.user).order_by("pk")

    @extend_schema(
        request=SlackChannelCreateInputSerializer, responses={201: SlackChannelOutputSerializer}
    )
    def create(self, request: Request) -> Response:
        data = request.data if hasattr(request.data, "get") else {}
        workspace_id = data.get("workspace")
        if isinstance(workspace_id, str) and workspace_id.isdigit():
            workspace_id = int(workspace_id)
        if isinstance(workspace_id, int):
            workspace = SlackWorkspace.objects.filter(pk=workspace_id).first()
            if workspace is not None:
                require_role_of_members(
                    user=request.user, organization_id=workspace.organization_id, role=Role.ADMIN
                )
        serializer = SlackChannelCreateInputSerializer(
            data=request.data, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        try:
            channel = slack_services.slack_channel_create(**serializer.validated_data)
        except IntegrityError as exc:
            raise serializers.ValidationError(
                {"channel_id": "this channel is already watched in the workspace"}
            ) from exc
        output = SlackChannelOutputSerializer(channel, context={"request": request})
        return Response(output.data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=SlackChannelUpdateInputSerializer, responses={200: SlackChannelOutputSerializer}
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        channel = self.get_object()
        serializer = SlackChannelUpdateInputSerializer(
            data=request.data, context={"request": request}
        )
        serializer.is_valid(raise_exception=True)
        channel = slack_services.slack_channel_update(
            channel=channel, data=serializer.validated_data
        )
        return Response(SlackChannelOutputSerializer(channel, context={"request": request}).data)
