"""Input and output serializers of the task API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from taskops.models import TaskRecord, TaskState
from taskops.services import BULK_RETRY_CAP


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
