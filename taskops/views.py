"""The task control API: look tasks up, cancel and retry them, and the system's health."""

from __future__ import annotations

import logging
from typing import Any

import django_filters
from celery import current_app
from django.http import Http404
from django_celery_beat.models import PeriodicTask
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
    ScheduleChangeOutputSerializer,
    ScheduleOutputSerializer,
    ScheduleUpdateInputSerializer,
    TaskBulkRetryInputSerializer,
    TaskBulkRetryOutputSerializer,
    TaskDetailOutputSerializer,
    TaskEnqueuedOutputSerializer,
    TaskListFilterSerializer,
    TaskOutputSerializer,
)
from tickets.api import OrderingFilter, SearchFilter
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
        operation_id="tasks_retry_many",
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


class ScheduleFilter(django_filters.FilterSet):
    enabled = django_filters.BooleanFilter()
    task = django_filters.CharFilter(help_text="task name, exactly")

    class Meta:
        model = PeriodicTask
        fields: list[str] = []


class ScheduleViewSet(viewsets.GenericViewSet):
    """Periodic tasks (django-celery-beat): see, enable/disable, reschedule, change arguments,
    run now. Superusers and staff manage all; an organization's admins manage the schedules
    whose kwargs name their organization (`organization_id`). Every change is recorded."""

    serializer_class = ScheduleOutputSerializer
    filter_backends = [DjangoFilterBackend, SearchFilter, OrderingFilter]
    filterset_class = ScheduleFilter
    search_fields = ["name", "task", "description"]
    ordering_fields = ["id", "name", "task", "last_run_at", "date_changed"]
    ordering = ["name"]
    http_method_names = ["get", "patch", "post", "head", "options"]

    def get_queryset(self) -> Any:
        return selectors.schedule_list_for_user(user=self.request.user)

    def list(self, request: Request) -> Response:
        """The schedules the caller manages."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(
            ScheduleOutputSerializer(page, many=True, context={"request": request}).data
        )

    def retrieve(self, request: Request, pk: str) -> Response:
        return Response(ScheduleOutputSerializer(self._schedule(pk)).data)

    @extend_schema(request=ScheduleUpdateInputSerializer, responses=ScheduleOutputSerializer)
    def partial_update(self, request: Request, pk: str) -> Response:
        """Change enabled, description, interval or crontab, args or kwargs (recorded)."""
        periodic = self._schedule(pk)
        serializer = ScheduleUpdateInputSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        periodic = services.schedule_update(
            periodic_id=periodic.pk,
            changes=serializer.validated_data,
            user=request.user,
            source="api",
        )
        return Response(ScheduleOutputSerializer(periodic).data)

    @extend_schema(request=None, responses={202: TaskEnqueuedOutputSerializer})
    @action(detail=True, methods=["post"], url_path="run", url_name="run")
    def run(self, request: Request, pk: str) -> Response:
        """Send the schedule's task now with its arguments (recorded); 202 with the task id."""
        periodic = self._schedule(pk)
        try:
            task_id = services.schedule_run(periodic=periodic, user=request.user, source="api")
        except services.TaskStateConflict as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response({"task_id": task_id}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        filters=False,
        parameters=[
            OpenApiParameter("page", int, description="page number"),
            OpenApiParameter("page_size", int, description="rows per page (at most 500)"),
        ],
        responses=ScheduleChangeOutputSerializer(many=True),
    )
    @action(detail=True, methods=["get"], url_path="history", url_name="history")
    def history(self, request: Request, pk: str) -> Response:
        """Who changed or ran the schedule, when, and its fields before and after."""
        periodic = self._schedule(pk)
        page = self.paginate_queryset(selectors.schedule_changes(periodic_id=periodic.pk))
        return self.get_paginated_response(ScheduleChangeOutputSerializer(page, many=True).data)

    def _schedule(self, pk: str) -> Any:
        if not (pk.isascii() and pk.isdigit()) or len(pk) > 18:
            raise Http404("no such schedule")
        periodic = self.get_queryset().filter(pk=int(pk)).first()
        if periodic is None:
            raise Http404("no such schedule")
        return periodic
