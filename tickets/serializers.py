"""Input and output serializers of the core API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tickets.models import Organization, Role, Status, Ticket, TicketMessage
from tickets.selectors import organization_list_for_user

# Other apps add computed output (e.g. predictions) without the core importing them:
# each callable takes a ticket and returns a dict merged into its representation.
ticket_output_extensions: list[Callable[[Ticket], dict[str, Any]]] = []
# Prefetches those extensions need, so a page of tickets costs a fixed number of queries.
ticket_output_prefetches: list[str] = []


class OrganizationOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "slug", "name", "confidence_threshold", "created_at"]


class TicketMessageOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = TicketMessage
        fields = [
            "id",
            "source",
            "external_id",
            "author",
            "body",
            "edited_at",
            "deleted_at",
            "created_at",
        ]


class TicketOutputSerializer(serializers.ModelSerializer):
    organization = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    organization_id = serializers.IntegerField(read_only=True)

    class Meta:
        model = Ticket
        fields = [
            "id",
            "organization",
            "organization_id",
            "source",
            "external_id",
            "subject",
            "body",
            "requester",
            "status",
            "category",
            "category_source",
            "priority",
            "priority_source",
            "needs_review",
            "created_at",
            "updated_at",
        ]

    def to_representation(self, instance: Ticket) -> dict[str, Any]:
        data = super().to_representation(instance)
        for extension in ticket_output_extensions:
            data.update(extension(instance))
        return data


class TicketDetailOutputSerializer(TicketOutputSerializer):
    messages = TicketMessageOutputSerializer(many=True, read_only=True)

    class Meta(TicketOutputSerializer.Meta):
        fields = [*TicketOutputSerializer.Meta.fields, "messages"]


@extend_schema_field(OpenApiTypes.INT)
class OrganizationWithRoleField(serializers.PrimaryKeyRelatedField):
    """An organization id in which the caller holds `min_role`; any other is 'does not exist'.

    So an input never tells an outsider whether another organization's id exists.
    """

    def __init__(self, *, min_role: Role = Role.OPERATOR, **kwargs: Any) -> None:
        self.min_role = min_role
        super().__init__(**kwargs)

    def get_queryset(self) -> Any:
        request = self.context["request"]
        return organization_list_for_user(user=request.user, min_role=self.min_role)


class TicketCreateInputSerializer(serializers.Serializer):
    organization = OrganizationWithRoleField()
    subject = serializers.CharField(max_length=500, allow_blank=True, default="")
    body = serializers.CharField(allow_blank=True, default="", max_length=100_000)
    requester = serializers.CharField(max_length=255, allow_blank=True, default="")
    external_id = serializers.CharField(max_length=255, allow_blank=True, default="")
    category = serializers.CharField(max_length=100, allow_blank=True, default="")
    priority = serializers.CharField(max_length=100, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not (attrs["subject"].strip() or attrs["body"].strip()):
            raise serializers.ValidationError({"subject": "a ticket needs a subject or a body"})
        return attrs


class TicketUpdateInputSerializer(serializers.Serializer):
    subject = serializers.CharField(max_length=500, allow_blank=True, required=False)
    body = serializers.CharField(allow_blank=True, required=False, max_length=100_000)
    status = serializers.ChoiceField(choices=Status.choices, required=False)
    category = serializers.CharField(max_length=100, required=False, allow_blank=False)
    priority = serializers.CharField(max_length=100, required=False, allow_blank=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: "this field cannot be changed" for name in sorted(unknown)}
            )
        return attrs
