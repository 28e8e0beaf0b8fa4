"""Admin pages of the task system: the ledger (read-only, retry and cancel), beat and schedules."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from django_celery_results.models import GroupResult, TaskResult
from kombu.exceptions import OperationalError as BrokerError

from taskops import selectors, services
from taskops.models import (
    ACTIVE_STATES,
    Heartbeat,
    ScheduleChange,
    ScheduleChangeAction,
    SchedulerLease,
    TaskRecord,
)
from tickets.admin_scoping import (
    OrganizationScopedAdmin,
    SuperuserOnlyAdmin,
    superuser_only_register,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Audit rows: viewable, never added, edited or deleted by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TaskRecord)
class TaskRecordAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = [
        "task_id",
        "name",
        "organization",
        "queue",
        "state",
        "progress_bar",
        "retries",
        "triggered_by",
        "worker",
        "queued_at",
        "runtime",
        "result_link",
    ]
    list_filter = [
        "state",
        "name",
        "organization",
        "queue",
        ("queued_at", admin.DateFieldListFilter),
    ]
    # Exact lookups: ids are looked up whole, which the unique index answers at once.
    search_fields = ["=task_id", "=retry_of"]
    search_help_text = "a task id (or the id of the task it retried)"
    date_hierarchy = "queued_at"
    list_select_related = ["organization"]
    list_per_page = 50
    show_full_result_count = False
    actions = ["retry_tasks", "cancel_tasks"]
    fieldsets = [
        (
            None,
            {"fields": ["task_id", "name", "queue", "organization", "state", "progress_bar"]},
        ),
        ("Arguments", {"fields": ["args_display", "kwargs_display"]}),
        (
            "Outcome",
            {"fields": ["result", "error", "traceback", "attempts_display", "result_link"]},
        ),
        (
            "Who and when",
            {
                "fields": [
                    "triggered_by",
                    "revoked_by",
                    "retry_of_link",
                    "retries",
                    "worker",
                    "eta",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "runtime",
                    "updated_at",
                ]
            },
        ),
    ]
    readonly_fields = [
        "task_id",
        "name",
        "queue",
        "organization",
        "state",
        "progress_bar",
        "args_display",
        "kwargs_display",
        "result",
        "error",
        "traceback",
        "attempts_display",
        "result_link",
        "triggered_by",
        "revoked_by",
        "retry_of_link",
        "retries",
        "worker",
        "eta",
        "queued_at",
        "started_at",
        "finished_at",
        "runtime",
        "updated_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TaskRecord]:
        results = TaskResult.objects.filter(task_id=OuterRef("task_id")).values("pk")[:1]
        return super().get_queryset(request).annotate(result_pk=Subquery(results))

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """Retry and cancel: superusers and staff allowed to change ledger rows."""
        return request.user.has_perm("taskops.change_taskrecord")

    # Seconds between reloads of a list or detail page showing a queued or running task.
    auto_refresh_seconds = 5

    @admin.display(description="progress")
    def progress_bar(self, obj: TaskRecord) -> str:
        """A <progress> bar with the percentage and the task's last message."""
        return progress_bar_html(obj)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> Any:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        changelist = (context or {}).get("cl")
        if changelist is not None:
            active = any(record.state in ACTIVE_STATES for record in changelist.result_list)
            context["auto_refresh_seconds"] = self.auto_refresh_seconds if active else None
        return response

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        record = self.get_object(request, object_id)
        active = record is not None and record.state in ACTIVE_STATES
        context = {
            **(extra_context or {}),
            "auto_refresh_seconds": self.auto_refresh_seconds if active else None,
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    @admin.display(description="args")
    def args_display(self, obj: TaskRecord) -> str:
        return json.dumps(obj.args, indent=2)

    @admin.display(description="kwargs")
    def kwargs_display(self, obj: TaskRecord) -> str:
        return json.dumps(obj.kwargs, indent=2)

    @admin.display(description="attempts")
    def attempts_display(self, obj: TaskRecord) -> str:
        return "\n".join(
            f"#{a.get('attempt')} at {a.get('failed_at')}: {a.get('error')}"
            + (f" (retry at {a['retry_at']})" if a.get("retry_at") else "")
            for a in obj.attempts or []
        )

    @admin.display(description="result row")
    def result_link(self, obj: TaskRecord) -> str:
        pk = getattr(obj, "result_pk", None)
        if pk is None:
            return "-"
        url = reverse("admin:django_celery_results_taskresult_change", args=[pk])
        return format_html('<a href="{}">result</a>', url)

    @admin.display(description="retry of")
    def retry_of_link(self, obj: TaskRecord) -> str:
        if not obj.retry_of:
            return "-"
        original = (
            TaskRecord.objects.filter(task_id=obj.retry_of).values_list("pk", flat=True).first()
        )
        if original is None:
            return obj.retry_of
        url = reverse("admin:taskops_taskrecord_change", args=[original])
        return format_html('<a href="{}">{}</a>', url, obj.retry_of)

    def _operate(
        self,
        request: HttpRequest,
        queryset: QuerySet[TaskRecord],
        *,
        verb: str,
        operation: Callable[[TaskRecord], str],
    ) -> None:
        """Apply `operation` to each selected task and report each outcome."""
        for record in queryset:
            label = f"{record.name} {record.task_id}"
            try:
                outcome = operation(record)
            except services.TaskStateConflict as exc:
                self.message_user(request, f"{label} not {verb}: {exc}", messages.WARNING)
            except BrokerError as exc:
                self.message_user(
                    request, f"{label} not {verb}: the queue is unavailable ({exc})", messages.ERROR
                )
            else:
                self.message_user(request, f"{label} {outcome}", messages.SUCCESS)

    @admin.action(
        description="Retry the selected tasks with the same arguments", permissions=["operate"]
    )
    def retry_tasks(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        def retry(record: TaskRecord) -> str:
            return f"retried as {services.task_retry(record=record, user=request.user)}"

        self._operate(request, queryset, verb="retried", operation=retry)

    @admin.action(
        description="Cancel the selected tasks (terminate if running)", permissions=["operate"]
    )
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet[TaskRecord]) -> None:
        def cancel(record: TaskRecord) -> str:
            return f"cancelled ({services.task_cancel(record=record, user=request.user).state})"

        self._operate(request, queryset, verb="cancelled", operation=cancel)


def progress_bar_html(record: TaskRecord) -> str:
    """The bar of a task's last progress report: done of total, percentage, message."""
    progress = record.progress or {}
    try:
        done, total = int(progress.get("done") or 0), int(progress.get("total") or 0)
    except (TypeError, ValueError):
        done, total = 0, 0
    if total <= 0:
        return "-"
    done = max(0, min(done, total))
    percent = round(100 * done / total)
    return format_html(
        '<div class="task-progress" data-state="{}">'
        '<progress value="{}" max="{}" aria-label="{}%">{}%</progress> '
        '<span class="task-progress-percent">{}%</span> '
        '<span class="task-progress-count">({}/{})</span> '
        '<span class="task-progress-message">{}</span></div>',
        record.state,
        done,
        total,
        percent,
        percent,
        percent,
        done,
        total,
        str(progress.get("message") or ""),
    )


@admin.register(Heartbeat)
class HeartbeatAdmin(SuperuserOnlyAdmin, ReadOnlyAdmin):
    list_display = ["name", "last_seen", "details"]


@admin.register(SchedulerLease)
class SchedulerLeaseAdmin(SuperuserOnlyAdmin, ReadOnlyAdmin):
    list_display = ["name", "holder", "expires_at", "acquired_at", "renewed_at"]


# django-celery-beat's schedule pages: "run now" records who ran the task, and every change
# (form, actions, delete, run) is recorded as a ScheduleChange, shown on the History page.
admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(SuperuserOnlyAdmin, BeatPeriodicTaskAdmin):
    object_history_template = "admin/taskops/periodictask_history.html"

    def save_model(self, request: HttpRequest, obj: PeriodicTask, form: Any, change: bool) -> None:
        before = None
        if change:
            stored = PeriodicTask.objects.filter(pk=obj.pk).first()
            before = services.schedule_snapshot(stored) if stored else None
        super().save_model(request, obj, form, change)
        after = services.schedule_snapshot(obj)
        if after != before:
            services.schedule_change_record(
                periodic=obj,
                action=ScheduleChangeAction.CHANGED if change else ScheduleChangeAction.CREATED,
                user=request.user,
                source="admin",
                before=before,
                after=after,
            )

    def delete_model(self, request: HttpRequest, obj: PeriodicTask) -> None:
        before = services.schedule_snapshot(obj)
        services.schedule_change_record(
            periodic=obj,
            action=ScheduleChangeAction.DELETED,
            user=request.user,
            source="admin",
            before=before,
            after=None,
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        for periodic in queryset:
            services.schedule_change_record(
                periodic=periodic,
                action=ScheduleChangeAction.DELETED,
                user=request.user,
                source="admin",
                before=services.schedule_snapshot(periodic),
                after=None,
            )
        super().delete_queryset(request, queryset)

    def _set_enabled(
        self, request: HttpRequest, queryset: QuerySet[PeriodicTask], enabled: bool | None
    ) -> None:
        """Enable, disable or toggle (None) through the recorded service, one row at a time."""
        for periodic in queryset:
            services.schedule_update(
                periodic_id=periodic.pk,
                changes={"enabled": (not periodic.enabled) if enabled is None else enabled},
                user=request.user,
                source="admin",
            )
        verb = {True: "enabled", False: "disabled", None: "toggled"}[enabled]
        self.message_user(request, f"{queryset.count()} schedule(s) {verb}", messages.SUCCESS)

    @admin.action(description="Enable selected tasks")
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable selected tasks")
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._set_enabled(request, queryset, False)

    @admin.action(description="Toggle activity of selected tasks")
    def toggle_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        self._set_enabled(request, queryset, None)

    @admin.action(description="Run selected tasks now")
    def run_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        for periodic in queryset:
            try:
                task_id = services.schedule_run(
                    periodic=periodic, user=request.user, source="admin"
                )
            except services.TaskStateConflict as exc:
                self.message_user(request, f"{periodic.name} not run: {exc}", messages.ERROR)
            except BrokerError as exc:
                self.message_user(
                    request,
                    f"{periodic.name} not run: the queue is unavailable ({exc})",
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request, f"{periodic.name}: {periodic.task} sent as {task_id}", messages.SUCCESS
                )

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> Any:
        """Django's history page, with the recorded changes (API and admin) and their values."""
        changes = []
        if object_id.isascii() and object_id.isdigit():
            for change in selectors.schedule_changes(periodic_id=int(object_id))[:200]:
                changes.append({"change": change, "diff": _snapshot_diff(change)})
        context = {**(extra_context or {}), "schedule_changes": changes}
        return super().history_view(request, object_id, extra_context=context)


def _snapshot_diff(change: ScheduleChange) -> list[tuple[str, str, str]]:
    """(field, before, after) for every field a change touched."""
    before, after = change.before or {}, change.after or {}
    return [
        (name, json.dumps(before.get(name)), json.dumps(after.get(name)))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]


@admin.register(ScheduleChange)
class ScheduleChangeAdmin(SuperuserOnlyAdmin, ReadOnlyAdmin):
    list_display = ["changed_at", "periodic_task_name", "action", "actor_username", "source"]
    list_filter = ["action", "source"]
    search_fields = ["periodic_task_name", "actor_username"]
    date_hierarchy = "changed_at"
    readonly_fields = [
        "periodic_task_name",
        "action",
        "actor",
        "actor_username",
        "source",
        "before",
        "after",
        "changed_at",
    ]
    exclude = ["periodic_task"]


# Schedules and raw results span every organization: superusers only.
superuser_only_register(
    IntervalSchedule, CrontabSchedule, SolarSchedule, ClockedSchedule, TaskResult, GroupResult
)


def lag_display(last_success: Any) -> str:
    """How long since the last success (now - then), e.g. "4m 05s"; "never" without one."""
    if last_success is None:
        return "never"
    seconds = max(0, int((timezone.now() - last_success).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s"


def lag_column(field: str) -> Callable[[Any, Any], str]:
    """An admin column "lag": now minus the row's `field` (its last successful sync)."""

    @admin.display(description="lag", ordering=field)
    def lag(model_admin: Any, obj: Any) -> str:
        return lag_display(getattr(obj, field))

    return lag


def last_run_column(
    *, task: str, kwargs: Callable[[Any], dict[str, Any]], key: str, description: str
) -> Callable[[Any, Any], Any]:
    """An admin column: `key` of the result of the row's newest successful `task` (the ledger).

    `kwargs(obj)` names the task's arguments that belong to the row (e.g. its mailbox id).
    """

    @admin.display(description=description)
    def last_run(model_admin: Any, obj: Any) -> Any:
        if obj.pk is None:
            return "-"
        record = selectors.task_last_success(name=task, kwargs=kwargs(obj))
        if record is None or not isinstance(record.result, dict):
            return "-"
        return record.result.get(key, "-")

    return last_run
