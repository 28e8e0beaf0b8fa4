"""Input and output serializers of the task API."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django_celery_beat.validators import (
    day_of_month_validator,
    day_of_week_validator,
    hour_validator,
    minute_validator,
    month_of_year_validator,
)
from rest_framework import serializers

from taskops.models import ScheduleChange, TaskRecord, TaskState
from taskops.selectors import schedule_manages_everything, schedule_organization_id
from taskops.services import BULK_RETRY_CAP, schedule_snapshot
from tickets.models import Organization, Role
from tickets.selectors import organization_list_for_user
from tickets.text import storable_json


class TaskOutputSerializer(serializers.ModelSerializer):
    """A task as lists show it."""

    organization = serializers.IntegerField(
        source="organization_id", read_only=True, allow_null=True, help_text="organization id"
    )
    organization_slug = serializers.CharField(
        source="organization.slug", read_only=True, allow_null=True
    )

    class Meta:
        model = TaskRecord
        fields = [
            "task_id",
            "name",
            "queue",
            "state",
            "organization",
            "organization_slug",
            "args",
            "kwargs",
            "progress",
            "result",
            "error",
            "retries",
            "retry_of",
            "triggered_by",
            "revoked_by",
            "worker",
            "eta",
            "queued_at",
            "started_at",
            "finished_at",
            "runtime",
            "updated_at",
        ]
        read_only_fields = fields


class TaskDetailOutputSerializer(TaskOutputSerializer):
    """One task with its traceback, every failed attempt and the retries started from it."""

    retried_as = serializers.SerializerMethodField()

    class Meta(TaskOutputSerializer.Meta):
        fields = [*TaskOutputSerializer.Meta.fields, "traceback", "attempts", "retried_as"]
        read_only_fields = fields

    def get_retried_as(self, record: TaskRecord) -> list[str]:
        return list(self.context.get("retried_as", []))


class ActiveTaskOutputSerializer(TaskOutputSerializer):
    """A queued or running task, with what the workers said about it."""

    on_worker = serializers.SerializerMethodField()
    worker_state = serializers.SerializerMethodField()

    class Meta(TaskOutputSerializer.Meta):
        fields = [*TaskOutputSerializer.Meta.fields, "on_worker", "worker_state"]
        read_only_fields = fields

    def _seen(self, record: TaskRecord) -> tuple[str, str] | None:
        seen: dict[str, tuple[str, str]] = self.context.get("seen", {})
        return seen.get(record.task_id)

    def get_on_worker(self, record: TaskRecord) -> str | None:
        seen = self._seen(record)
        return seen[0] if seen else None

    def get_worker_state(self, record: TaskRecord) -> str | None:
        """active, reserved or scheduled as a worker reported it; None when none knows it."""
        seen = self._seen(record)
        return seen[1] if seen else None


class TaskListFilterSerializer(serializers.Serializer):
    """Query parameters of an organization's task list."""

    state = serializers.CharField(required=False, help_text="one state, or several comma-separated")
    name = serializers.CharField(required=False, max_length=255)

    def validate_state(self, value: str) -> list[str]:
        states = [part.strip().upper() for part in value.split(",") if part.strip()]
        unknown = [state for state in states if state not in TaskState.values]
        if unknown:
            raise serializers.ValidationError(
                f"unknown state {', '.join(unknown)}; one of {', '.join(TaskState.values)}"
            )
        return states


class TaskEnqueuedOutputSerializer(serializers.Serializer):
    """202 answers about a task: its id (a new one for a retry), and what became of it."""

    task_id = serializers.CharField()
    retry_of = serializers.CharField(required=False)
    state = serializers.CharField(required=False)

    class Meta:
        # Its own name in the OpenAPI schema (another app has a serializer of this name).
        ref_name = "TaskAccepted"

    def to_representation(self, instance: Any) -> dict[str, Any]:
        return {
            key: value
            for key, value in super().to_representation(instance).items()
            if value is not None
        }


class TaskBulkRetryInputSerializer(serializers.Serializer):
    """POST tasks/retry: the tasks to retry, by id or by the task search's filters."""

    task_ids = serializers.ListField(
        child=serializers.CharField(max_length=255),
        required=False,
        allow_empty=False,
        max_length=BULK_RETRY_CAP,
        help_text=f"task ids (at most {BULK_RETRY_CAP})",
    )
    filter = serializers.DictField(
        required=False,
        allow_empty=False,
        help_text="the task search's query parameters, e.g. "
        '{"state": ["FAILURE"], "name": "…", "kwargs_contains": {"organization_id": 3}}; '
        "state defaults to FAILURE and REVOKED",
    )
    limit = serializers.IntegerField(
        min_value=1,
        max_value=BULK_RETRY_CAP,
        default=BULK_RETRY_CAP,
        help_text="most tasks retried by this call (oldest first)",
    )
    dry_run = serializers.BooleanField(default=False, help_text="report, retry nothing")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(getattr(self, "initial_data", {}) or {}) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: "unknown field" for name in sorted(unknown)})
        if ("task_ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError(
                {"task_ids": "give either task_ids or filter (exactly one of them)"}
            )
        return attrs


class TaskBulkRetryOutputSerializer(serializers.Serializer):
    matched = serializers.IntegerField(help_text="tasks the ids or the filter matched")
    capped = serializers.BooleanField(help_text="more matched than this call retries")
    dry_run = serializers.BooleanField()
    retried = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    would_retry = serializers.ListField(child=serializers.CharField())
    skipped = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))


# ------------------------------------------------------------------------------
# Schedules
# ------------------------------------------------------------------------------
MAX_SCHEDULE_JSON_CHARS = 10_000


class ScheduleOutputSerializer(serializers.Serializer):
    """A periodic task: what it runs, when, with which arguments, and for whom."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    task = serializers.CharField()
    enabled = serializers.BooleanField()
    description = serializers.CharField()
    schedule = serializers.SerializerMethodField(help_text="the schedule in words")
    interval = serializers.SerializerMethodField()
    crontab = serializers.SerializerMethodField()
    args = serializers.SerializerMethodField()
    kwargs = serializers.SerializerMethodField()
    queue = serializers.CharField(allow_null=True)
    one_off = serializers.BooleanField()
    organization = serializers.SerializerMethodField(help_text="organization id, or null: global")
    organization_slug = serializers.SerializerMethodField()
    last_run_at = serializers.DateTimeField(allow_null=True)
    total_run_count = serializers.IntegerField()
    date_changed = serializers.DateTimeField()

    def _snapshot(self, periodic: Any) -> dict[str, Any]:
        return schedule_snapshot(periodic)

    def get_schedule(self, periodic: Any) -> str:
        schedule = periodic.interval or periodic.crontab or periodic.solar or periodic.clocked
        return str(schedule) if schedule else ""

    def get_interval(self, periodic: Any) -> dict[str, Any] | None:
        return self._snapshot(periodic)["interval"]

    def get_crontab(self, periodic: Any) -> dict[str, str] | None:
        return self._snapshot(periodic)["crontab"]

    def get_args(self, periodic: Any) -> Any:
        return self._snapshot(periodic)["args"]

    def get_kwargs(self, periodic: Any) -> Any:
        return self._snapshot(periodic)["kwargs"]

    def get_organization(self, periodic: Any) -> int | None:
        return schedule_organization_id(periodic)

    def get_organization_slug(self, periodic: Any) -> str | None:
        organization_id = schedule_organization_id(periodic)
        if organization_id is None:
            return None
        # One query per organization per response, shared by the rows of a list.
        slugs: dict[int, str | None] = self.root.__dict__.setdefault("_organization_slugs", {})
        if organization_id not in slugs:
            slugs[organization_id] = (
                Organization.objects.filter(pk=organization_id)
                .values_list("slug", flat=True)
                .first()
            )
        return slugs[organization_id]


class IntervalInputSerializer(serializers.Serializer):
    every = serializers.IntegerField(min_value=1, max_value=1_000_000)
    # No microseconds: beat would send the task in a tight loop.
    period = serializers.ChoiceField(choices=["days", "hours", "minutes", "seconds"])


class CrontabInputSerializer(serializers.Serializer):
    minute = serializers.CharField(max_length=240, default="*", validators=[minute_validator])
    hour = serializers.CharField(max_length=96, default="*", validators=[hour_validator])
    day_of_week = serializers.CharField(
        max_length=64, default="*", validators=[day_of_week_validator]
    )
    day_of_month = serializers.CharField(
        max_length=124, default="*", validators=[day_of_month_validator]
    )
    month_of_year = serializers.CharField(
        max_length=64, default="*", validators=[month_of_year_validator]
    )
    timezone = serializers.CharField(max_length=63, required=False)

    def validate_timezone(self, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):
            raise serializers.ValidationError(f"unknown time zone {value!r}") from None
        return value


def _json_size(value: Any) -> Any:
    if len(json.dumps(value)) > MAX_SCHEDULE_JSON_CHARS:
        raise serializers.ValidationError(f"at most {MAX_SCHEDULE_JSON_CHARS} characters of JSON")
    # The tasks beat sends carry these into the ledger's jsonb, which holds no NUL.
    if storable_json(value) != value:
        raise serializers.ValidationError(
            "must not contain a NUL (\\u0000) or other control character or a lone surrogate"
        )
    return value


class ScheduleUpdateInputSerializer(serializers.Serializer):
    """PATCH schedules/{id}: what may change. Name and task stay as they are."""

    enabled = serializers.BooleanField(required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)
    interval = IntervalInputSerializer(required=False)
    crontab = CrontabInputSerializer(required=False)
    args = serializers.ListField(required=False, validators=[_json_size])
    kwargs = serializers.DictField(required=False, validators=[_json_size])

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(getattr(self, "initial_data", {}) or {}) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: "this field cannot be changed" for name in sorted(unknown)}
            )
        if "interval" in attrs and "crontab" in attrs:
            raise serializers.ValidationError(
                {"crontab": "give an interval or a crontab, not both"}
            )
        user = self.context["request"].user
        if "kwargs" in attrs and not schedule_manages_everything(user=user):
            # An organization's admin keeps the schedule in an organization they administer.
            value = attrs["kwargs"].get("organization_id")
            administered = organization_list_for_user(user=user, min_role=Role.ADMIN)
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not administered.filter(pk=value).exists()
            ):
                raise serializers.ValidationError(
                    {"kwargs": "organization_id must name an organization you administer"}
                )
        if not attrs:
            raise serializers.ValidationError({"detail": "nothing to change"})
        return attrs


class ScheduleChangeOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = ScheduleChange
        fields = [
            "id",
            "periodic_task_id",
            "periodic_task_name",
            "action",
            "actor",
            "actor_username",
            "source",
            "before",
            "after",
            "changed_at",
        ]
        read_only_fields = fields
