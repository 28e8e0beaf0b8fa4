"""The model registry: trained versions per organization and target, and their predictions."""

from __future__ import annotations

from typing import Any

from django.db import models

from tickets.models import Organization, Ticket


class Target(models.TextChoices):
    """The ticket fields a model predicts."""

    CATEGORY = "category", "Category"
    PRIORITY = "priority", "Priority"


class ModelStatus(models.TextChoices):
    TRAINING = "training", "Training"
    # Trained and stored, not (yet) serving: the promotion gate has not decided.
    READY = "ready", "Ready"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"


def artifact_path(instance: ModelVersion, filename: str) -> str:
    """Where an artifact lives in storage: per organization and target."""
    return f"mlmodels/org-{instance.organization_id}/{instance.target}/{filename}"


class ModelVersion(models.Model):
    """One trained model of an organization's target: its artifact, metrics and provenance."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="model_versions"
    )
    target = models.CharField(max_length=16, choices=Target.choices)
    version = models.PositiveIntegerField()
    status = models.CharField(
        max_length=16, choices=ModelStatus.choices, default=ModelStatus.TRAINING
    )
    params = models.JSONField(default=dict, blank=True)
    # The candidate's own held-out metrics (training.evaluate's dict), with "cv": the chosen
    # configuration's out-of-fold figures on the training split (classes too small to hold out).
    metrics = models.JSONField(default=dict, blank=True)
    # Model selection: the grid, every candidate's CV scores, the choice and its temperature.
    selection = models.JSONField(default=dict, blank=True)
    # The promotion gate's record: both scores on the same held-out tickets and the decision.
    comparison = models.JSONField(default=dict, blank=True)
    labels = models.JSONField(default=list, blank=True)
    label_counts = models.JSONField(default=dict, blank=True)
    training_set_size = models.PositiveIntegerField(default=0)
    n_train = models.PositiveIntegerField(default=0)
    n_test = models.PositiveIntegerField(default=0)
    # Tickets the shipped artifact learned from (all labelled tickets of kept classes);
    # 0 for versions whose artifact is the hold-out model itself (trained on n_train).
    n_shipped = models.PositiveIntegerField(default=0)
    # Held-out ticket ids: the next version keeps them held out, so the gate compares
    # both models on tickets neither of them was trained on.
    test_ticket_ids = models.JSONField(default=list, blank=True)
    # What the labelled data looked like when training started; "new labels" means it moved.
    label_watermark = models.JSONField(default=dict, blank=True)
    library_versions = models.JSONField(default=dict, blank=True)
    artifact = models.FileField(upload_to=artifact_path, max_length=500, blank=True)
    artifact_sha256 = models.CharField(max_length=64, blank=True, default="")
    artifact_size = models.PositiveBigIntegerField(default=0)
    trained_by_task_id = models.CharField(max_length=255, blank=True, default="", db_index=True)
    triggered_by = models.CharField(max_length=64, blank=True, default="")
    activated_by = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    training_seconds = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    trained_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organization_id", "target", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "target", "version"], name="uniq_model_version"
            ),
            # At most one serving model per organization and target.
            models.UniqueConstraint(
                fields=["organization", "target"],
                condition=models.Q(status="active"),
                name="uniq_active_model_version",
            ),
            # A redelivered training task finds its own row instead of adding a version.
            models.UniqueConstraint(
                fields=["trained_by_task_id", "organization", "target"],
                condition=~models.Q(trained_by_task_id=""),
                name="uniq_model_version_task",
            ),
        ]
        indexes = [models.Index(fields=["organization", "target", "status"])]

    def __str__(self) -> str:
        return f"{self.organization_id}/{self.target} v{self.version} ({self.status})"

    @property
    def macro_f1(self) -> float | None:
        return self.metrics.get("macro_f1")

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("accuracy")

    def summary(self) -> dict[str, Any]:
        """A short description for task results and command output."""
        return {
            "model_version_id": self.pk,
            "target": self.target,
            "version": self.version,
            "status": self.status,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_shipped": self.n_shipped,
            "chosen": self.selection.get("chosen"),
        }


class Prediction(models.Model):
    """What one model version said about one ticket: the label, how sure, and why."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="predictions")
    target = models.CharField(max_length=16, choices=Target.choices)
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="predictions"
    )
    label = models.CharField(max_length=100)
    confidence = models.FloatField()
    # Top probability minus the runner-up's: the review queue shows the smallest first.
    margin = models.FloatField(null=True, blank=True)
    top_terms = models.JSONField(default=list, blank=True)
    # Whether the prediction set the ticket's field (it never replaces a person's label).
    applied = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["ticket_id", "target", "-model_version_id"]
        constraints = [
            # Idempotency of every classification task, whatever is redelivered.
            models.UniqueConstraint(
                fields=["ticket", "target", "model_version"], name="uniq_prediction"
            )
        ]
        indexes = [models.Index(fields=["model_version", "ticket"])]

    def __str__(self) -> str:
        return f"{self.target}={self.label} ({self.confidence:.2f}) for ticket {self.ticket_id}"
