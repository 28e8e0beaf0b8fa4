"""Input and output serializers of the model registry API."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from mlmodels.models import ModelVersion, Target


class _StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, naming them, instead of silently ignoring a typo."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(getattr(self, "initial_data", {}) or {}) - set(self.fields)
        if unknown:
            raise serializers.ValidationError({name: "unknown field" for name in sorted(unknown)})
        return attrs


class ClassifyTicketInputSerializer(_StrictSerializer):
    ticket_id = serializers.IntegerField(min_value=1)


class BatchClassifyInputSerializer(_StrictSerializer):
    organization_id = serializers.IntegerField(min_value=1)
    # None: every ticket the active models have not classified yet.
    ticket_ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        allow_empty=False,
        max_length=100_000,
    )


class TrainModelInputSerializer(_StrictSerializer):
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
