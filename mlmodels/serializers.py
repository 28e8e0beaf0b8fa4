"""Input and output serializers of the model registry API."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from mlmodels.models import ModelVersion, Target
from tickets.models import Ticket
from tickets.serializers import StrictInputSerializer


class ClassifyTicketInputSerializer(StrictInputSerializer):
    ticket_id = serializers.IntegerField(min_value=1)


class BatchClassifyInputSerializer(StrictInputSerializer):
    organization_id = serializers.IntegerField(min_value=1)
    # None: every ticket the active models have not classified yet.
    ticket_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_empty=False,
        max_length=100_000,
    )


class TrainModelInputSerializer(StrictInputSerializer):
    organization_id = serializers.IntegerField(min_value=1)
    targets = serializers.ListField(
        child=serializers.ChoiceField(choices=Target.choices), required=False, allow_empty=False
    )


class TaskEnqueuedOutputSerializer(serializers.Serializer):
    task_id = serializers.CharField()


class ModelVersionOutputSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(
        source="organization_id", read_only=True, help_text="organization id"
    )
    organization_slug = serializers.CharField(source="organization.slug", read_only=True)
    accuracy = serializers.FloatField(read_only=True, allow_null=True)
    macro_f1 = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "organization",
            "organization_slug",
            "target",
            "version",
            "status",
            "accuracy",
            "macro_f1",
            "metrics",
            "comparison",
            "params",
            "labels",
            "label_counts",
            "training_set_size",
            "n_train",
            "n_test",
            "library_versions",
            "artifact_sha256",
            "artifact_size",
            "trained_by_task_id",
            "triggered_by",
            "activated_by",
            "error",
            "training_seconds",
            "created_at",
            "trained_at",
            "activated_at",
        ]
        read_only_fields = fields


class ReviewTicketOutputSerializer(serializers.ModelSerializer):
    """A ticket in the review queue: its labels and each target's latest prediction."""

    organization_slug = serializers.CharField(source="organization.slug", read_only=True)
    review_margin = serializers.FloatField(read_only=True, allow_null=True, default=None)
    predictions = serializers.SerializerMethodField()

    class Meta:
        model = Ticket
        fields = [
            "id",
            "organization",
            "organization_slug",
            "subject",
            "body",
            "category",
            "category_source",
            "priority",
            "priority_source",
            "needs_review",
            "review_margin",
            "predictions",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField())
    def get_predictions(self, ticket: Ticket) -> dict[str, Any]:
        from mlmodels.receivers import ticket_prediction_fields

        return ticket_prediction_fields(ticket)["predictions"]


class ReviewAcceptInputSerializer(StrictInputSerializer):
    target = serializers.ChoiceField(choices=Target.choices)


class ReviewCorrectInputSerializer(StrictInputSerializer):
    target = serializers.ChoiceField(choices=Target.choices)
    label = serializers.CharField(max_length=100, allow_blank=False)
    allow_new_label = serializers.BooleanField(required=False, default=False)
