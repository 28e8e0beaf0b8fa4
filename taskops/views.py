"""The task control API: look tasks up, cancel and retry them, and the system's health."""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from taskops import health, selectors, services
from taskops.filters import TASK_ORDERING_FIELDS, TaskFilter, task_filter_data
from taskops.models import TaskRecord, TaskState
from taskops.serializers import (
    ActiveTaskOutputSerializer,
    TaskBulkRetryInputSerializer,
    TaskBulkRetryOutputSerializer,
    TaskDetailOutputSerializer,
    TaskEnqueuedOutputSerializer,
    TaskListFilterSerializer,
    TaskOutputSerializer,
)
from tickets.api import OrderingFilter
from tickets.models import Role
from tickets.selectors import organization_list_for_user

logger = logging.getLogger(__name__)

TASK_ID = r"(?P<task_id>[^/]+)"


class TaskViewSet(viewsets.GenericViewSet):
    """Tasks in the ledger: viewers read; operators cancel and retry; superusers see all."""

    serializer_class = TaskOutputSerializer
    # The search (list) only; the seed's actions keep their own parameters.
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    filterset_class = TaskFilter
    ordering_fields = TASK_ORDERING_FIELDS
    ordering = ["-queued_at", "-id"]

    def get_queryset(self) -> Any:
        return selectors.task_list_for_user(user=self.request.user)

    def list(self, request: Request) -> Response:
        """Search the tasks the caller may see: state, name, organization, queue, who, when,
        and arguments (args_contains / kwargs_contains); newest first unless ?ordering=."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        data = TaskOutputSerializer(page, many=True, context={"request": request}).data
        return self.get_paginated_response(data)

    @extend_schema(
        filters=False,
        request=TaskBulkRetryInputSerializer,
        responses={200: TaskBulkRetryOutputSerializer, 202: TaskBulkRetryOutputSerializer},
    )
    @action(detail=False, methods=["post"], url_path="retry", url_name="retry-many")
    def retry_many(self, request: Request) -> Response:
        """Retry many FAILURE/REVOKED tasks, by ids or by a search filter (operators).

        At most `limit` (≤ 500) are retried per call, oldest first; each is reported as
        retried (new id) or skipped (why). Ids of tasks the caller cannot see are reported
        as "no such task", like ids that do not exist.
        """
        serializer = TaskBulkRetryInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        visible = self.get_queryset()
        missing: list[str] = []
        if "task_ids" in data:
            wanted = list(dict.fromkeys(data["task_ids"]))
            found = {record.task_id: record for record in visible.filter(task_id__in=wanted)}
            missing = [task_id for task_id in wanted if task_id not in found]
            matched = [found[task_id] for task_id in wanted if task_id in found]
            records = matched[: data["limit"]]
            total = len(matched)
        else:
            try:
                query = task_filter_data(data["filter"])
            except KeyError as exc:
                raise ValidationError({"filter": {str(exc.args[0]): "unknown filter"}}) from None
            if "state" not in query:
                query.setlist("state", [TaskState.FAILURE, TaskState.REVOKED])
            filterset = TaskFilter(data=query, queryset=visible, request=request)
            if not filterset.is_valid():
                raise ValidationError({"filter": filterset.errors})
            matches = filterset.qs.order_by("queued_at", "id")
            total = matches.count()
            records = list(matches[: data["limit"]])
        report = services.task_retry_many(
            records=records,
            user=request.user,
            operable_organization_ids=_operable_organization_ids(request.user),
            missing=missing,
            dry_run=data["dry_run"],
        )
        body = {
            "matched": total,
            "capped": total > len(records),
            "dry_run": data["dry_run"],
            "retried": report.retried,
            "would_retry": report.would_retry,
            "skipped": report.skipped,
        }
        accepted = report.retried and not data["dry_run"]
        return Response(body, status=status.HTTP_202_ACCEPTED if accepted else status.HTTP_200_OK)

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
        filters=False,
        parameters=[
            TaskListFilterSerializer,
            OpenApiParameter("page", int, description="page number"),
            OpenApiParameter("page_size", int, description="rows per page (at most 500)"),
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
        # ASCII digits only: "²".isdigit() is true, and int("²") raises.
        lookup = {"pk": int(org_id)} if org_id.isascii() and org_id.isdigit() else {"slug": org_id}
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

    @extend_schema(
        filters=False,
        parameters=[
            OpenApiParameter("page", int, description="page number"),
            OpenApiParameter("page_size", int, description="rows per page (at most 500)"),
        ],
        responses=ActiveTaskOutputSerializer(many=True),
    )
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


def _operable_organization_ids(user: Any) -> set[int] | None:
    """Organizations where the caller may retry and cancel (None: all, a superuser)."""
    if user.is_superuser:
        return None
    organizations = organization_list_for_user(user=user, min_role=Role.OPERATOR)
    return set(organizations.values_list("pk", flat=True))


def _ask_workers(task_ids: list[str]) -> tuple[dict[str, tuple[str, str]], dict[str, Any]]:
    """What live workers know of these tasks: {task_id: (worker, state)} and who answered."""
    from zenith.celery import app

    if not task_ids:
        return {}, {"asked": False, "answered": []}
    try:
        replies = app.control.inspect(timeout=health.INSPECT_TIMEOUT).query_task(*task_ids) or {}
    except Exception as exc:  # an unreachable broker: answer from the ledger alone
        logger.warning("tasks/active: cannot ask the workers: %s", exc)
        return {}, {"asked": True, "answered": [], "error": f"{type(exc).__name__}: {exc}"}
    seen: dict[str, tuple[str, str]] = {}
    for hostname, tasks in replies.items():
        for task_id, info in (tasks or {}).items():
            state = info[0] if isinstance(info, list | tuple) and info else str(info)
            seen[task_id] = (hostname, state)
    return seen, {"asked": True, "answered": sorted(replies)}
