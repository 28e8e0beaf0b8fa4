"""Operational records of the task system: the task ledger, heartbeats and beat's lease."""

from __future__ import annotations

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models

from tickets.models import Organization


class TaskState(models.TextChoices):
    PENDING = "PENDING", "Pending"
    STARTED = "STARTED", "Started"
    PROGRESS = "PROGRESS", "In progress"
    RETRY = "RETRY", "Waiting to retry"
    SUCCESS = "SUCCESS", "Succeeded"
    FAILURE = "FAILURE", "Failed"
    REVOKED = "REVOKED", "Revoked"


# States in which a task will still do something: queued, running or waiting to retry.
ACTIVE_STATES = (TaskState.PENDING, TaskState.STARTED, TaskState.PROGRESS, TaskState.RETRY)
RUNNING_STATES = (TaskState.STARTED, TaskState.PROGRESS)
FINAL_STATES = (TaskState.SUCCESS, TaskState.FAILURE, TaskState.REVOKED)


class TaskRecord(models.Model):
    """One published task, from the moment it is queued to its end (the task ledger)."""

    task_id = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    queue = models.CharField(max_length=100, blank=True, default="")
    # No database constraint: the row is written on the publish path, which must never
    # fail because a task names an organization that is gone; Django still cascades.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        db_constraint=False,
        db_index=False,  # (organization, queued_at) below serves it
        related_name="task_records",
    )
    args = models.JSONField(default=list, blank=True, encoder=DjangoJSONEncoder)
    kwargs = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    state = models.CharField(max_length=16, choices=TaskState.choices, default=TaskState.PENDING)
    # {"done": int, "total": int, "message": str} from the last PROGRESS report.
    progress = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    error = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    retries = models.PositiveIntegerField(default=0)
    # One entry per failed attempt: attempt, error, traceback, failed_at, retry_at.
    attempts = models.JSONField(default=list, blank=True)
    retry_of = models.CharField(max_length=255, blank=True, default="")
    # "user:<id>", "beat:<schedule name>" or "system".
    triggered_by = models.CharField(max_length=255, blank=True, default="system")
    revoked_by = models.CharField(max_length=255, blank=True, default="")
    worker = models.CharField(max_length=255, blank=True, default="")
    eta = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    runtime = models.FloatField(null=True, blank=True, help_text="seconds of the last attempt")
    # Set by every write (queryset updates skip auto_now): the last sign of life.
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-queued_at", "-id"]
        # Few indexes: every state change rewrites each of them (state is indexed, so no
        # update is a HOT update), and a task changes state two or three times.
        constraints = [models.UniqueConstraint(fields=["task_id"], name="taskrec_task_id_uniq")]
        indexes = [
            models.Index(fields=["organization", "-queued_at"], name="taskrec_org_queued"),
            # Active lists, stuck tasks, and "finished in the last hour" (updated_at is set
            # by the write that finishes a task).
            models.Index(fields=["state", "updated_at"], name="taskrec_state_updated"),
            models.Index(fields=["queued_at"], name="taskrec_queued"),
            models.Index(
                fields=["retry_of"], name="taskrec_retry_of", condition=~models.Q(retry_of="")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.task_id} ({self.state})"


class Heartbeat(models.Model):
    """The last time a periodic component (beat, via health_check_tasks) showed it was alive."""

    name = models.CharField(max_length=100, unique=True)
    last_seen = models.DateTimeField()
    details = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_seen:%Y-%m-%d %H:%M:%S}"


class ScheduleChangeAction(models.TextChoices):
    CREATED = "created", "Created"
    CHANGED = "changed", "Changed"
    DELETED = "deleted", "Deleted"
    RUN = "run", "Run now"


class ScheduleChange(models.Model):
    """One change to a periodic task (django-celery-beat's PeriodicTask): who, when, what.

    `before`/`after` hold the schedule's editable fields (see taskops.services
    schedule_snapshot); a run records the task id it sent in `after`.
    """

    # No constraint: the history outlives a deleted schedule (its name stays here).
    periodic_task = models.ForeignKey(
        "django_celery_beat.PeriodicTask",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name="+",
    )
    periodic_task_name = models.CharField(max_length=200)
    action = models.CharField(max_length=16, choices=ScheduleChangeAction.choices)
    # "user:<id>" (as the task ledger's triggered_by) and the username at the time.
    actor = models.CharField(max_length=255)
    actor_username = models.CharField(max_length=150, blank=True, default="")
    source = models.CharField(max_length=16, help_text="api, admin or command")
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-changed_at", "-id"]
        indexes = [models.Index(fields=["periodic_task", "-changed_at"], name="schedchg_task")]

    def __str__(self) -> str:
        return f"{self.periodic_task_name} {self.action} by {self.actor_username or self.actor}"


class SchedulerLease(models.Model):
    """Which beat process may send periodic tasks, until when: only the holder ticks."""

    name = models.CharField(max_length=100, unique=True)
    holder = models.CharField(max_length=255, blank=True, default="")
    expires_at = models.DateTimeField()
    acquired_at = models.DateTimeField(null=True, blank=True)
    renewed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'} until {self.expires_at:%H:%M:%S}"
