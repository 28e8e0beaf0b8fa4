"""Sync triggers over the sync registry: POST tasks/sync/<source>, /organization and /all."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations import sync
from integrations.serializers import (
    SyncAllInputSerializer,
    SyncOrganizationInputSerializer,
    SyncTriggerInputSerializer,
)
from taskops.serializers import TaskEnqueuedOutputSerializer
from taskops.services import triggered_by_label
from tickets.models import Role
from tickets.permissions import organization_for_role
from tickets.selectors import organization_list_for_user


class SyncTriggerView(APIView):
    """POST {"organization_id"}: enqueue a sync of one source; 202 with the task id.

    Operators may trigger; an organization the caller does not belong to is 404.
    """

    source = ""

    @extend_schema(
        request=SyncTriggerInputSerializer, responses={202: TaskEnqueuedOutputSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = SyncTriggerInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        organization = organization_for_role(
            user=request.user,
            organization_id=serializer.validated_data["organization_id"],
            role=Role.OPERATOR,
        )
        task_id = sync.sync_source_enqueue(
            source=self.source,
            organization=organization,
            triggered_by=triggered_by_label(request.user),
        )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)


_ENQUEUED = inline_serializer("SyncEnqueued", {"task_id": serializers.CharField()})
_ENQUEUED_MANY = inline_serializer(
    "SyncAllEnqueued",
    {
        "tasks": inline_serializer(
            "SyncAllTask",
            {
                "organization": serializers.IntegerField(),
                "organization_slug": serializers.CharField(),
                "task_id": serializers.CharField(),
            },
            many=True,
        )
    },
)


class SyncOrganizationView(APIView):
    """POST {"organization_id", "sources"?}: sync_organization_data for one organization
    (operators); 202 {"task_id"}. An organization the caller does not belong to is 404."""

    @extend_schema(request=SyncOrganizationInputSerializer, responses={202: _ENQUEUED})
    def post(self, request: Request) -> Response:
        serializer = SyncOrganizationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        organization = organization_for_role(
            user=request.user,
            organization_id=serializer.validated_data["organization_id"],
            role=Role.OPERATOR,
        )
        task_id = sync.organization_sync_enqueue(
            organization=organization,
            sources=serializer.validated_data.get("sources"),
            triggered_by=triggered_by_label(request.user),
        )
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)


class SyncAllView(APIView):
    """POST {"sources"?}: sync_organization_data for every organization the caller operates
    that has an enabled mailbox or Slack channel; 202 with one task per organization."""

    @extend_schema(request=SyncAllInputSerializer, responses={202: _ENQUEUED_MANY})
    def post(self, request: Request) -> Response:
        serializer = SyncAllInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        sources = serializer.validated_data.get("sources")
        operated = organization_list_for_user(user=request.user, min_role=Role.OPERATOR)
        organizations = sync.organizations_to_sync(sources=sources).filter(
            pk__in=operated.values("pk")
        )
        tasks = [
            {
                "organization": organization.pk,
                "organization_slug": organization.slug,
                "task_id": sync.organization_sync_enqueue(
                    organization=organization,
                    sources=sources,
                    triggered_by=triggered_by_label(request.user),
                ),
            }
            for organization in organizations
        ]
        return Response(
            {"tasks": tasks}, status=status.HTTP_202_ACCEPTED if tasks else status.HTTP_200_OK
        )
