"""The task control API: look tasks up, cancel and retry them, and the system's health."""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from taskops import health, selectors, services
from taskops.models import TaskRecord
from taskops.serializers import (
    ActiveTaskOutputSerializer,
    TaskDetailOutputSerializer,
    TaskEnqueuedOutputSerializer,
    TaskListFilterSerializer,
    TaskOutputSerializer,
)
from tickets.selectors import organization_list_for_user

logger = logging.getLogger(__name__)

TASK_ID = r"(?P<task_id>[^/]+)"


class TaskViewSet(viewsets.GenericViewSet):
    """Tasks in the ledger: viewers read; operators cancel and retry; superusers see all."""

    serializer_class = TaskOutputSerializer

    def get_queryset(self) -> Any:
        return selectors.task_list_for_user(user=self.request.user)

    def _record(self, task_id: str) -> TaskRecord:
        record = selectors.task_get_for_user(user=self.request.user, task_id=task_id)
        if record is None:
            raise Http404("no such task")
        return record

    def _require_operator(self, record: TaskRecord) -> None:
        if not selectors.task_can_operate(user=self.request.user, record=record):
            raise PermissionDenied("this needs the operator role in the task's organization")

    @extend_schema(responses=TaskDetailOutputSerializer)
    @action(detail=False, methods=["get"], url_path=f"status/{TASK_ID}", url_name="status")
    def task_status(self, request: Request, task_id: str) -> Response:
        """One task: state, organization, arguments, progress, result or error, retries."""
        record = self._record(task_id)
        context = {"request": request, "retried_as": selectors.task_retries_of(record=record)}
        return Response(TaskDetailOutputSerializer(record, context=context).data)

    @extend_schema(
        parameters=[
            TaskListFilterSerializer,
            OpenApiParameter("page", int, description="page number"),
        ],
        responses=TaskOutputSerializer(many=True),
    )
    @action(
        detail=False,
        methods=["get"],
        url_path=r"organization/(?P<org_id>[^/]+)",
        url_name="organization",
    )
    def organization_tasks(self, request: Request, org_id: str) -> Response:
        """An organization's tasks, newest first, paginated; filter by state and name."""
        organizations = organization_list_for_user(user=request.user)
        lookup = {"pk": int(org_id)} if org_id.isdigit() else {"slug": org_id}
        organization = organizations.filter(**lookup).first()
        if organization is None:
            raise Http404("no such organization")
        filters = TaskListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        records = selectors.task_list(
            organization=organization,
            states=filters.validated_data.get("state"),
            name=filters.validated_data.get("name"),
        )
        page = self.paginate_queryset(records)
        data = TaskOutputSerializer(page, many=True, context={"request": request}).data
        return self.get_paginated_response(data)

    @extend_schema(responses=ActiveTaskOutputSerializer(many=True))
    @action(detail=False, methods=["get"], url_path="active", url_name="active")
    def active(self, request: Request) -> Response:
        """Tasks queued, running or waiting to retry, cross-checked with the workers."""
        page = self.paginate_queryset(selectors.task_list_active_for_user(user=request.user))
        records = list(page or [])
        seen, workers = _ask_workers([record.task_id for record in records])
        data = ActiveTaskOutputSerializer(
            records, many=True, context={"request": request, "seen": seen}
        ).data
        response = self.get_paginated_response(data)
        response.data["workers"] = workers
        return response

    @extend_schema(request=None, responses={202: TaskEnqueuedOutputSerializer})
    @action(detail=False, methods=["post"], url_path=f"cancel/{TASK_ID}", url_name="cancel")
    def cancel(self, request: Request, task_id: str) -> Response:
        """Revoke a queued task or terminate a running one; its state becomes REVOKED."""
        record = self._record(task_id)
        self._require_operator(record)
        try:
            record = services.task_cancel(record=record, user=request.user)
        except services.TaskStateConflict as exc:
            return Response(
                {"detail": str(exc), "state": record.state}, status=status.HTTP_409_CONFLICT
            )
        return Response(
            {"task_id": record.task_id, "state": record.state}, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(request=None, responses={202: TaskEnqueuedOutputSerializer})
    @action(detail=False, methods=["post"], url_path=f"retry/{TASK_ID}", url_name="retry")
    def retry(self, request: Request, task_id: str) -> Response:
        """Run a FAILURE or REVOKED task again with the same arguments: 202 with the new id."""
        record = self._record(task_id)
        self._require_operator(record)
        try:
            new_id = services.task_retry(record=record, user=request.user)
        except services.TaskStateConflict as exc:
            return Response(
                {"detail": str(exc), "state": record.state}, status=status.HTTP_409_CONFLICT
            )
        return Response(
            {"task_id": new_id, "retry_of": record.task_id}, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(responses={200: dict, 503: dict})
    @action(detail=False, methods=["get"], url_path="health", url_name="health")
    def health(self, request: Request) -> Response:
        """Database, broker, workers per queue, beat, queue depths: 200 healthy, 503 not."""
        healthy, report = health.health_report()
        return Response(
            report, status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE
        )


def _ask_workers(task_ids: list[str]) -> tuple[dict[str, tuple[str, str]], dict[str, Any]]:
    """What live workers know of these tasks: {task_id: (worker, state)} and who answered."""
    if not task_ids:
        return {}, {"asked": False, "answered": []}
    try:
        replies = (
            current_app.control.inspect(timeout=health.INSPECT_TIMEOUT).query_task(*task_ids) or {}
        )
    except Exception as exc:  # an unreachable broker: answer from the ledger alone
        logger.warning("tasks/active: cannot ask the workers: %s", exc)
        return {}, {"asked": True, "answered": [], "error": f"{type(exc).__name__}: {exc}"}
    seen: dict[str, tuple[str, str]] = {}
    for hostname, tasks in replies.items():
        for task_id, info in (tasks or {}).items():
            state = info[0] if isinstance(info, list | tuple) and info else str(info)
            seen[task_id] = (hostname, state)
    return seen, {"asked": True, "answered": sorted(replies)}
