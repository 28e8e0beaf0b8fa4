"""Slack configuration API (organization admins) and the manual sync trigger (operators)."""

from __future__ import annotations

from django.contrib import messages as django_messages
from django.db import IntegrityError
from django.db.models import QuerySet
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import APIException
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from slack_bolt.adapter.django.handler import to_bolt_request, to_django_response

from integrations.models import SlackChannel, SlackWorkspace
from integrations.slack import oauth as slack_oauth
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
from tickets.permissions import organization_for_role, require_role_of_members


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


# ------------------------------------------------------------------------------
# --- "Add to Slack" (OAuth v2 install) ---
# ------------------------------------------------------------------------------

ADMIN_RETURN = "admin"


def _oauth_unavailable() -> Response:
    return Response(
        {"detail": "Slack OAuth is not configured (SLACK_CLIENT_ID, SLACK_CLIENT_SECRET)."},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
    )


class SlackInstallView(APIView):
    """GET integrations/slack/install?organization=ID: to Slack's consent page (org admins).

    The state in the URL is bound to the organization and the caller, used once, and
    good for 10 minutes; ``from=admin`` brings the browser back to the admin afterwards.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(
        parameters=[OpenApiParameter("organization", int, required=True)],
        responses={302: None},
    )
    def get(self, request: Request) -> HttpResponse:
        raw = request.query_params.get("organization", "")
        if not raw.isdigit():
            raise serializers.ValidationError(
                {"organization": "an organization id (integer) is required"}
            )
        organization = organization_for_role(
            user=request.user, organization_id=int(raw), role=Role.ADMIN
        )
        if not slack_oauth.oauth_configured():
            return _oauth_unavailable()
        return_to = ""
        if request.query_params.get("from") == ADMIN_RETURN and request.user.is_staff:
            return_to = reverse("admin:integrations_slackworkspace_changelist")
        bolt_request = to_bolt_request(request._request)
        bolt_request.context[slack_oauth.ORGANIZATION] = organization
        bolt_request.context[slack_oauth.USER] = request.user
        bolt_request.context[slack_oauth.RETURN_TO] = return_to
        return to_django_response(slack_oauth.oauth_flow().handle_installation(bolt_request))


class SlackOAuthCallbackView(APIView):
    """GET integrations/slack/oauth/callback: Slack's redirect after consent.

    Bolt's flow checks the state (and that it is the caller's), exchanges the code with
    ``oauth.v2.access`` and stores the workspace from Slack's answer: an HTML page (or
    JSON ``{"detail"}`` when asked for) says what happened; 409 when another organization
    holds the team.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: None, 302: None, 400: None, 409: None})
    def get(self, request: Request) -> HttpResponse:
        if not slack_oauth.oauth_configured():
            return _oauth_unavailable()
        bolt_request = to_bolt_request(request._request)
        bolt_request.context[slack_oauth.USER] = request.user
        response = to_django_response(slack_oauth.oauth_flow().handle_callback(bolt_request))
        installed = bolt_request.context.get(slack_oauth.INSTALLED)
        if installed and response.status_code == status.HTTP_302_FOUND:
            django_messages.success(request._request, f"Slack workspace {installed} connected.")
        # A person's browser lands here from Slack: its error pages stay readable HTML
        # (JSON when the caller asked for JSON); see zenith.api.APIErrorMiddleware.
        response.human_page = True  # type: ignore[attr-defined]
        return response
