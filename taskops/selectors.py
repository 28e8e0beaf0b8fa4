"""Reads of the task ledger, scoped to what the caller may see."""

from __future__ import annotations

import fnmatch
import json
import re
from collections import Counter
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from taskops.models import ACTIVE_STATES, ScheduleChange, TaskRecord, TaskState
from tickets.models import Organization, Role
from tickets.selectors import membership_has_role, organization_list_for_user


def task_list_for_user(*, user: Any) -> QuerySet[TaskRecord]:
    """Tasks of the caller's organizations; tasks with no organization for staff only."""
    records = TaskRecord.objects.select_related("organization")
    if not user or not user.is_authenticated:
        return records.none()
    if user.is_superuser:
        return records.all()
    visible = Q(organization__in=organization_list_for_user(user=user))
    if user.is_staff:
        visible |= Q(organization__isnull=True)
    return records.filter(visible)


def task_get_for_user(*, user: Any, task_id: str) -> TaskRecord | None:
    """One task the caller may see, or None (which the API answers with 404)."""
    return task_list_for_user(user=user).filter(task_id=task_id).first()


def task_can_operate(*, user: Any, record: TaskRecord) -> bool:
    """Whether the caller may cancel or retry the task: an operator of its organization."""
    if not user or not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    if record.organization_id is None:
        return bool(user.is_staff)
    return membership_has_role(user=user, organization=record.organization_id, role=Role.OPERATOR)


def task_list(
    *, organization: Organization, states: list[str] | None = None, name: str | None = None
) -> QuerySet[TaskRecord]:
    """An organization's tasks, newest first, optionally of some states and one task name."""
    records = TaskRecord.objects.filter(organization=organization).select_related("organization")
    if states:
        records = records.filter(state__in=states)
    if name:
        records = records.filter(name=name)
    return records.order_by("-queued_at", "-id")


def task_list_active_for_user(*, user: Any) -> QuerySet[TaskRecord]:
    """Tasks queued, running or waiting to retry that the caller may see, oldest first."""
    return task_list_for_user(user=user).filter(state__in=ACTIVE_STATES).order_by("queued_at", "id")


def task_retries_of(*, record: TaskRecord) -> list[str]:
    """Ids of the tasks started as retries of this one, oldest first."""
    return list(
        TaskRecord.objects.filter(retry_of=record.task_id)
        .order_by("queued_at", "id")
        .values_list("task_id", flat=True)
    )


def task_failure_count(*, since: timedelta = timedelta(hours=1)) -> int:
    """Tasks that failed within `since` (every organization)."""
    start = timezone.now() - since
    # updated_at (indexed with state) is set by the write that records the failure.
    return TaskRecord.objects.filter(
        state=TaskState.FAILURE, updated_at__gte=start, finished_at__gte=start
    ).count()


# ------------------------------------------------------------------------------
# Schedules (django-celery-beat's PeriodicTask)
# ------------------------------------------------------------------------------
def schedule_organization_id(periodic: Any) -> int | None:
    """The organization a schedule works for: the integer `organization_id` of its kwargs."""
    try:
        kwargs = json.loads(periodic.kwargs or "{}")
    except ValueError:
        return None
    value = kwargs.get("organization_id") if isinstance(kwargs, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def schedule_manages_everything(*, user: Any) -> bool:
    """Superusers and staff manage every schedule, the global ones included."""
    return bool(user and user.is_authenticated and (user.is_superuser or user.is_staff))


def schedule_list_for_user(*, user: Any) -> QuerySet[Any]:
    """The schedules the caller may see and change.

    Periodic tasks have no organization column: a schedule belongs to the organization its
    kwargs name (`organization_id`), and an admin of that organization manages it. Schedules
    naming none (Zenith's defaults) are global: superusers and staff only. The rows are few
    (tens), so their kwargs are read in Python, the same on PostgreSQL and SQLite.
    """
    from django_celery_beat.models import PeriodicTask

    schedules = PeriodicTask.objects.select_related("interval", "crontab")
    if not user or not user.is_authenticated:
        return schedules.none()
    if schedule_manages_everything(user=user):
        return schedules.all()
    administered = set(
        organization_list_for_user(user=user, min_role=Role.ADMIN).values_list("pk", flat=True)
    )
    if not administered:
        return schedules.none()
    ids = [
        pk
        for pk, kwargs in PeriodicTask.objects.values_list("pk", "kwargs")
        if schedule_organization_id(SimpleNamespace(kwargs=kwargs)) in administered
    ]
    return schedules.filter(pk__in=ids)


def schedule_changes(*, periodic_id: int) -> QuerySet[ScheduleChange]:
    """A schedule's recorded changes, newest first."""
    return ScheduleChange.objects.filter(periodic_task_id=periodic_id).order_by(
        "-changed_at", "-id"
    )


def task_failures_count(
    *, organization: Organization, pattern: str, since: datetime, id_limit: int = 10
) -> tuple[Counter[str], list[str], str]:
    """Failures since `since` of tasks matching `pattern`: per name, newest ids, last error."""
    # updated_at >= finished_at (the finishing write sets both), so this bound lets the
    # (state, updated_at) index find the rows.
    failures = TaskRecord.objects.filter(
        organization=organization,
        state=TaskState.FAILURE,
        updated_at__gte=since,
        finished_at__gte=since,
    )
    prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    if prefix:
        failures = failures.filter(name__startswith=prefix)
    counts: Counter[str] = Counter()
    task_ids: list[str] = []
    last_error = ""
    for name, task_id, error in failures.order_by("-finished_at", "-id").values_list(
        "name", "task_id", "error"
    ):
        if not fnmatch.fnmatchcase(name, pattern):
            continue
        counts[name] += 1
        if len(task_ids) < id_limit:
            task_ids.append(task_id)
        if not last_error and error:
            last_error = error
    return counts, task_ids, last_error
