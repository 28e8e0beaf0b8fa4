"""The one sync trigger over the sync registry: POST tasks/sync/<source>."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from integrations import sync
from integrations.serializers import SyncTriggerInputSerializer
from taskops.serializers import TaskEnqueuedOutputSerializer
from taskops.services import triggered_by_label
from tickets.models import Role
from tickets.permissions import organization_for_role


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
