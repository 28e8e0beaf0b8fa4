"""Alerts: rules per organization, the incidents they open, and each message sent.

The tables were created by taskops (migration taskops 0003) before alerting became its own
app; they keep their names (`db_table`), so moving the models lost no rows.
"""

from __future__ import annotations

from django.db import models

from tickets.models import Organization


class AlertRuleKind(models.TextChoices):
    TASK_FAILURES = "task_failures", "Task failures"
    INTEGRATION_ERROR = "integration_error", "Integration in error"
    MODEL_ACCURACY = "model_accuracy", "Model live accuracy below offline"


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
    model_accuracy: a serving model version's live accuracy (reviewed predictions, at least
    ZENITH_ML_LIVE_ACCURACY_MIN_REVIEWS of them) is `threshold` points or more below its
    offline (held-out) accuracy.
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
        default=1,
        help_text="failures (or integrations in error) that make the rule fire; "
        "model_accuracy: points of accuracy the live figure may fall below the offline one",
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
        db_table = "taskops_alertrule"
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
        db_table = "taskops_alertincident"
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
    # Claimed by a send task, which is talking to Slack or the mail server right now.
    SENDING = "sending", "Sending"
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
        db_table = "taskops_alertdelivery"
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
