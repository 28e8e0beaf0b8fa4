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


# ------------------------------------------------------------------------------
# Alerts: rules per organization, the incidents they open, and each message sent
# ------------------------------------------------------------------------------
class AlertRuleKind(models.TextChoices):
    TASK_FAILURES = "task_failures", "Task failures"
    INTEGRATION_ERROR = "integration_error", "Integration in error"


class AlertIntegration(models.TextChoices):
    """What an integration-in-error rule watches."""

    ANY = "any", "Mailboxes and Slack workspaces"
    MAILBOX = "mailbox", "Mailboxes"
    SLACK = "slack", "Slack workspaces"


class AlertRule(models.Model):
    """A condition watched every minute; while it holds, the rule has one open incident.

    task_failures: at least `threshold` tasks whose name matches `task_pattern` (fnmatch)
    failed within the last `window_minutes`. integration_error: at least `threshold`
    enabled mailboxes or Slack workspaces have been in error for over `window_minutes`.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="alert_rules"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(
        max_length=32, choices=AlertRuleKind.choices, default=AlertRuleKind.TASK_FAILURES
    )
    task_pattern = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="task_failures: fnmatch pattern of task names, e.g. integrations.tasks.*",
    )
    integration = models.CharField(
        max_length=16,
        choices=AlertIntegration.choices,
        default=AlertIntegration.ANY,
        help_text="integration_error: which integrations to watch",
    )
    threshold = models.PositiveIntegerField(
        default=1, help_text="failures (or integrations in error) that make the rule fire"
    )
    window_minutes = models.PositiveIntegerField(
        default=15,
        help_text="task_failures: failures counted over this many minutes; "
        "integration_error: how long an integration must have been in error",
    )
    # Null: the organization's first enabled workspace.
    slack_workspace = models.ForeignKey(
        "integrations.SlackWorkspace",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="alert_rules",
    )
    slack_channel = models.CharField(
        max_length=80, blank=True, default="", help_text="channel id (C0123…) or #name"
    )
    email_recipients = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization_id", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="uniq_alert_rule_name_per_org"
            )
        ]

    def __str__(self) -> str:
        return self.name


class AlertIncidentState(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class AlertIncident(models.Model):
    """One stretch of time during which a rule's condition held: fired once, recovered once."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="incidents")
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="alert_incidents"
    )
    state = models.CharField(
        max_length=16, choices=AlertIncidentState.choices, default=AlertIncidentState.OPEN
    )
    # What was seen when it fired: the count and what was counted (tasks or integrations).
    count = models.PositiveIntegerField(default=0)
    details = models.JSONField(default=dict, blank=True)
    summary = models.TextField(blank=True, default="")
    opened_at = models.DateTimeField()
    # The last evaluation that still found the condition holding.
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    # "recovered" (the condition cleared), or why it was closed without recovering.
    resolution = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule"],
                condition=models.Q(state="open"),
                name="uniq_open_alert_incident_per_rule",
            )
        ]
        indexes = [models.Index(fields=["organization", "-opened_at"], name="alertinc_org_opened")]

    def __str__(self) -> str:
        return f"{self.rule} #{self.pk} ({self.state})"


class AlertChannel(models.TextChoices):
    SLACK = "slack", "Slack"
    EMAIL = "email", "E-mail"


class AlertMessageKind(models.TextChoices):
    FIRED = "fired", "Fired"
    RECOVERED = "recovered", "Recovered"


class AlertDeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Failed, will retry"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class AlertDelivery(models.Model):
    """One message of an incident to one destination, and how sending it went."""

    incident = models.ForeignKey(AlertIncident, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=AlertChannel.choices)
    # The Slack channel, or the e-mail recipients (comma-separated).
    target = models.TextField()
    kind = models.CharField(max_length=16, choices=AlertMessageKind.choices)
    subject = models.CharField(max_length=255, blank=True, default="")
    text = models.TextField()
    state = models.CharField(
        max_length=16, choices=AlertDeliveryState.choices, default=AlertDeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="", help_text="the last failed attempt's error")
    created_at = models.DateTimeField(auto_now_add=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["incident_id", "id"]
        verbose_name_plural = "alert deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["incident", "channel", "kind"], name="uniq_alert_delivery"
            )
        ]
        indexes = [models.Index(fields=["state", "created_at"], name="alertdel_state_created")]

    def __str__(self) -> str:
        return f"{self.kind} via {self.channel} to {self.target} ({self.state})"
