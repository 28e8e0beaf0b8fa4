"""Query parameters of the task search (`GET tasks/`), shared with bulk retry's `filter`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import django_filters
from django import forms
from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.http import QueryDict
from django_filters.fields import IsoDateTimeField

from taskops.models import TaskRecord, TaskState
from tickets.text import json_depth, storable_json

# The longest JSON accepted by args_contains / kwargs_contains.
MAX_CONTAINS_CHARS = 2000
# The deepest nesting of arrays and objects accepted there.
MAX_CONTAINS_DEPTH = 16
# Without PostgreSQL's jsonb containment, args_contains looks at this many leading positions.
FALLBACK_ARG_POSITIONS = 20


class CommaMultipleChoiceField(forms.MultipleChoiceField):
    """Several choices, as repeated parameters (?state=A&state=B) or a comma list (A,B)."""

    def to_python(self, value: Any) -> list[str]:
        values = super().to_python(value)
        return [part.strip().upper() for item in values for part in item.split(",") if part.strip()]


class CommaMultipleChoiceFilter(django_filters.MultipleChoiceFilter):
    field_class = CommaMultipleChoiceField


class UTCIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, converted to UTC: PostgreSQL refuses offsets beyond ±15:59 that ISO allows."""

    def to_python(self, value: Any) -> datetime | None:
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("out of range") from None


class UTCIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCIsoDateTimeField


class JSONContainsField(forms.CharField):
    """A JSON document of one type (list or object), parsed; anything else is a form error."""

    def __init__(self, *, json_type: type, **kwargs: Any) -> None:
        self.json_type = json_type
        kwargs.setdefault("max_length", MAX_CONTAINS_CHARS)
        super().__init__(**kwargs)

    def clean(self, value: Any) -> Any:
        text = super().clean(value)
        if text in (None, ""):
            return None
        try:
            parsed = json.loads(text)
        except RecursionError:
            raise forms.ValidationError(f"nested deeper than {MAX_CONTAINS_DEPTH}") from None
        except ValueError:
            raise forms.ValidationError("not valid JSON") from None
        if not isinstance(parsed, self.json_type):
            kind = "a JSON array" if self.json_type is list else "a JSON object"
            raise forms.ValidationError(f"must be {kind}")
        if problem := _json_problem(parsed):
            raise forms.ValidationError(problem)
        return parsed


def _json_problem(document: Any) -> str:
    """Why a parsed JSON document cannot be searched for ("" if it can).

    PostgreSQL's jsonb holds no NUL character ("\\u0000") and no lone surrogate, so no
    stored argument has one; a search nested deeper than any task's arguments only costs
    the database work.
    """
    if json_depth(document) > MAX_CONTAINS_DEPTH:
        return f"nested deeper than {MAX_CONTAINS_DEPTH}"
    if storable_json(document) != document:
        return "must not contain a NUL (\\u0000) or other control character or a lone surrogate"
    return ""


def json_contains(
    queryset: QuerySet[TaskRecord],
    *,
    field: str,
    value: list[Any] | dict[str, Any],
    vendor: str | None = None,
) -> QuerySet[TaskRecord]:
    """Rows whose JSON `field` contains `value`.

    PostgreSQL: jsonb containment (`@>`), at any depth. Elsewhere (SQLite) a fallback:
    each top-level key of an object must equal the given value exactly, and each element of
    an array must equal one of the field's first FALLBACK_ARG_POSITIONS elements.
    """
    if (vendor or connection.vendor) == "postgresql":
        return queryset.filter(**{f"{field}__contains": value})
    # Keys go through KeyTransform, never into a lookup string: a key may hold "__".
    items = (
        [(str(key), item) for key, item in value.items()]
        if isinstance(value, dict)
        else [(None, item) for item in value]
    )
    for number, (key, item) in enumerate(items):
        if key is not None:
            alias = f"_json_{field}_{number}"
            queryset = queryset.alias(**{alias: KeyTransform(key, field)}).filter(**{alias: item})
            continue
        anywhere = Q()
        for position in range(FALLBACK_ARG_POSITIONS):
            alias = f"_json_{field}_{number}_{position}"
            queryset = queryset.alias(**{alias: KeyTransform(str(position), field)})
            anywhere |= Q(**{alias: item})
        queryset = queryset.filter(anywhere)
    return queryset


class JSONContainsFilter(django_filters.Filter):
    field_class = JSONContainsField


class TaskFilter(django_filters.FilterSet):
    """Search the ledger: by state, name, organization, queue, who, when and arguments."""

    state = CommaMultipleChoiceFilter(
        choices=TaskState.choices, help_text="one or several states (repeat it, or comma-separated)"
    )
    name = django_filters.CharFilter(help_text="task name, exactly")
    name_prefix = django_filters.CharFilter(
        field_name="name", lookup_expr="startswith", help_text="task names starting with this"
    )
    organization = django_filters.NumberFilter(
        field_name="organization_id", help_text="organization id"
    )
    organization_slug = django_filters.CharFilter(field_name="organization__slug")
    queue = django_filters.CharFilter()
    triggered_by = django_filters.CharFilter(help_text='"user:<id>", "beat:<schedule>" or "system"')
    retry_of = django_filters.CharFilter(help_text="retries of this task id")
    created_after = UTCIsoDateTimeFilter(
        field_name="queued_at", lookup_expr="gte", help_text="queued at or after (ISO 8601)"
    )
    created_before = UTCIsoDateTimeFilter(
        field_name="queued_at", lookup_expr="lt", help_text="queued before (ISO 8601)"
    )
    finished_after = UTCIsoDateTimeFilter(field_name="finished_at", lookup_expr="gte")
    finished_before = UTCIsoDateTimeFilter(field_name="finished_at", lookup_expr="lt")
    args_contains = JSONContainsFilter(
        json_type=list,
        method="filter_args_contains",
        help_text="JSON array the positional arguments contain, e.g. [42] (PostgreSQL: any depth)",
    )
    kwargs_contains = JSONContainsFilter(
        json_type=dict,
        method="filter_kwargs_contains",
        help_text='JSON object the keyword arguments contain, e.g. {"organization_id": 3}',
    )

    class Meta:
        model = TaskRecord
        fields: list[str] = []

    def filter_args_contains(
        self, queryset: QuerySet[TaskRecord], name: str, value: list[Any] | None
    ) -> QuerySet[TaskRecord]:
        if value is None:
            return queryset
        return json_contains(queryset, field="args", value=value)

    def filter_kwargs_contains(
        self, queryset: QuerySet[TaskRecord], name: str, value: dict[str, Any] | None
    ) -> QuerySet[TaskRecord]:
        if value is None:
            return queryset
        return json_contains(queryset, field="kwargs", value=value)


TASK_ORDERING_FIELDS = [
    "queued_at",
    "started_at",
    "finished_at",
    "updated_at",
    "runtime",
    "retries",
    "name",
    "state",
    "queue",
]


def task_filter_data(filters: dict[str, Any]) -> QueryDict:
    """A bulk retry's JSON `filter` as the query parameters the task search reads.

    Lists become repeated parameters (state); JSON values of *_contains may be given as
    JSON or as its text. Unknown names raise KeyError naming them.
    """
    known = set(TaskFilter.base_filters)
    unknown = sorted(set(filters) - known)
    if unknown:
        raise KeyError(", ".join(unknown))
    data = QueryDict(mutable=True)
    for name, value in filters.items():
        if name in ("args_contains", "kwargs_contains") and not isinstance(value, str):
            data[name] = json.dumps(value)
        elif isinstance(value, list):
            data.setlist(name, [str(item) for item in value])
        elif value is not None:
            data[name] = str(value)
    return data
