"""Input and output serializers of the core API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Prefetch
from django.utils.functional import cached_property
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField
from rest_framework.relations import PKOnlyObject, RelatedField

from tickets.models import Organization, Role, Status, Ticket, TicketMessage
from tickets.selectors import organization_list_for_user

# Other apps add computed output (e.g. predictions) without the core importing them:
# each callable takes a ticket and returns a dict merged into its representation.
ticket_output_extensions: list[Callable[[Ticket], dict[str, Any]]] = []
# Prefetches those extensions need, so a page of tickets costs a fixed number of queries.
ticket_output_prefetches: list[str | Prefetch] = []


class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not know, naming them (e.g. ``organization`` in a PATCH)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(
                {name: "this field cannot be set here" for name in sorted(unknown)}
            )
        return attrs


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


def _direct_source(field: serializers.Field, columns: set[str]) -> str | None:
    """The column or forward relation `field` reads, if `getattr` reads it exactly as DRF does.

    DRF's `Field.get_attribute` walks a dotted source, looks into mappings and calls
    callables; for one concrete model field it comes down to `getattr` (a missing related
    row reads as None). Any other field, or one that overrides `get_attribute` (a pk-only
    related field, a method field), returns None and keeps DRF's way.
    """
    reads_plainly = type(field).get_attribute is serializers.Field.get_attribute or (
        isinstance(field, RelatedField)
        and type(field).get_attribute is RelatedField.get_attribute
        and not field.use_pk_only_optimization()
    )
    if reads_plainly and len(field.source_attrs) == 1 and field.source in columns:
        return field.source
    return None


class TicketOutputSerializer(serializers.ModelSerializer):
    organization = serializers.IntegerField(
        source="organization_id", read_only=True, help_text="organization id"
    )
    organization_slug = serializers.CharField(source="organization.slug", read_only=True)

    class Meta:
        model = Ticket
        fields = [
            "id",
            "organization",
            "organization_slug",
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

    @cached_property
    def _output_fields(self) -> list[tuple[str, serializers.Field, str | None]]:
        """(name, field, model attribute it reads directly or None for DRF's way) per output."""
        fields = list(self._readable_fields)
        for field in fields:
            if isinstance(field, serializers.DateTimeField) and not hasattr(field, "timezone"):
                # The zone DRF looks up again for every value (timezone.get_current_timezone);
                # nothing activates another while one response is rendered.
                zone = field.default_timezone()
                if zone is not None:
                    field.timezone = zone
        columns = {name for f in Ticket._meta.concrete_fields for name in (f.name, f.attname)}
        return [(str(field.field_name), field, _direct_source(field, columns)) for field in fields]

    def to_representation(self, instance: Ticket) -> dict[str, Any]:
        # DRF's Serializer.to_representation, reading plain columns with one getattr: a page
        # of tickets spent more time in DRF's generic attribute walk than in the conversions.
        data: dict[str, Any] = {}
        for name, field, source in self._output_fields:
            if source is None:
                try:
                    attribute = field.get_attribute(instance)
                except SkipField:
                    continue
                value = attribute.pk if isinstance(attribute, PKOnlyObject) else attribute
            else:
                try:
                    attribute = value = getattr(instance, source)
                except ObjectDoesNotExist:
                    attribute = value = None
            data[name] = None if value is None else field.to_representation(attribute)
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
