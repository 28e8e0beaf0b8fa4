"""The admin by tenant: staff who are not superusers see only organizations they administer.

Every Zenith ModelAdmin puts `OrganizationScopedAdmin` first among its bases. For a staff
member who is not a superuser it then:

- lists, opens, changes and deletes only rows of organizations where the member has the
  admin role (anything else answers 404 on its change page, as if it did not exist);
- runs actions only on those rows (the admin builds an action's queryset from
  `get_queryset`, so another tenant's selected id is dropped before the action runs);
- offers only those organizations, and rows of them, in foreign-key choices, so a row
  cannot be moved or attached to another tenant;
- hides the page entirely when the member administers no organization.

Django's model permissions still apply on top. Global tables (schedules, raw results,
users, tokens, login attempts) are superuser-only through `SuperuserOnlyAdmin`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.utils import NotRelationField, get_fields_from_path
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest

from tickets.models import Organization
from tickets.selectors import organization_ids_administered_by

_CACHE_ATTRIBUTE = "_zenith_admin_organization_ids"


def admin_organization_ids(request: HttpRequest) -> frozenset[int] | None:
    """Organizations the request's user administers; None means every one (superusers)."""
    user = request.user
    if user.is_superuser:
        return None
    cached = getattr(request, _CACHE_ATTRIBUTE, None)
    if cached is None:
        cached = frozenset(organization_ids_administered_by(user=user))
        setattr(request, _CACHE_ATTRIBUTE, cached)
    return cached


_LOOKUPS: dict[type[models.Model], str | None] = {}


def _related_models(model: type[models.Model]) -> list[tuple[str, type[models.Model]]]:
    """(name, model) of the forward foreign keys and one-to-ones of `model`."""
    pairs = []
    for field in model._meta.get_fields():
        related = field.related_model
        if (field.many_to_one or field.one_to_one) and field.concrete and isinstance(related, type):
            pairs.append((field.name, related))
    return pairs


def organization_lookup(model: type[models.Model]) -> str | None:
    """The ORM path from `model` to its organization's id ("pk" for Organization itself).

    A direct `organization` foreign key wins; otherwise the first foreign key to a model
    that has one (a Slack channel through its workspace, a prediction through its ticket).
    """
    if model not in _LOOKUPS:
        _LOOKUPS[model] = _organization_lookup(model)
    return _LOOKUPS[model]


def _organization_lookup(model: type[models.Model]) -> str | None:
    if issubclass(model, Organization):
        return "pk"
    if issubclass(model, get_user_model()):
        return "memberships__organization"
    related = _related_models(model)
    if ("organization", Organization) in related:
        return "organization"
    for name, other in related:
        if ("organization", Organization) in _related_models(other):
            return f"{name}__organization"
    return None


def _filter(queryset: QuerySet[Any], lookup: str, ids: frozenset[int]) -> QuerySet[Any]:
    narrowed = queryset.filter(**{f"{lookup}__in": ids})
    # Only a path through memberships can repeat a row; distinct() elsewhere would keep
    # the admin's bulk delete from working.
    return narrowed.distinct() if lookup.startswith("memberships") else narrowed


def scope_queryset(request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
    """`queryset` narrowed to the organizations the request's user administers."""
    ids = admin_organization_ids(request)
    if ids is None:
        return queryset
    lookup = organization_lookup(queryset.model)
    if lookup is None:
        return queryset.none()
    return _filter(queryset, lookup, ids)


def _selectable(pk: models.Field, value: str) -> bool:
    """Whether `value` could be a primary key of the model (a number in range, no NUL)."""
    if "\x00" in value:
        return False
    try:
        pk.run_validators(pk.to_python(value))
    except ValidationError:
        return False
    return True


class CheckedSelectionAdmin(admin.ModelAdmin):
    """An action runs on the selected ids a primary key can hold; any other (text for a
    number, out of range, a NUL) is dropped like an id that does not exist. Django's admin
    would put it into the action's query and answer 500."""

    def response_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        selected = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        kept = [value for value in selected if _selectable(self.model._meta.pk, value)]
        if kept != selected:
            post = request.POST.copy()
            post.setlist(helpers.ACTION_CHECKBOX_NAME, kept)
            request.POST = post
        return super().response_action(request, queryset)


class OrganizationScopedAdmin(CheckedSelectionAdmin):
    """Put first among a ModelAdmin's bases: rows only of organizations the user administers.

    `organization_field` names the path to the organization when the automatic lookup
    (see `organization_lookup`) is not the one wanted.
    """

    organization_field: str | None = None

    def _organization_field(self) -> str:
        field = self.organization_field or organization_lookup(self.model)
        if field is None:
            raise ImproperlyConfigured(
                f"{type(self).__name__}: {self.model.__name__} has no path to an organization; "
                "set organization_field or use SuperuserOnlyAdmin"
            )
        return field

    def _in_scope(self, request: HttpRequest, obj: Any) -> bool:
        ids = admin_organization_ids(request)
        if ids is None or obj is None:
            return True
        if not ids:
            return False
        field = self._organization_field()
        if field == "pk":
            return obj.pk in ids
        return type(obj)._default_manager.filter(pk=obj.pk, **{f"{field}__in": ids}).exists()

    def _administers_any(self, request: HttpRequest) -> bool:
        ids = admin_organization_ids(request)
        return ids is None or bool(ids)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        ids = admin_organization_ids(request)
        if ids is None:
            return queryset
        return _filter(queryset, self._organization_field(), ids)

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        obj = super().get_object(request, object_id, from_field)
        if obj is None and admin_organization_ids(request) is not None:
            # Another tenant's row answers exactly as a missing one: 404.
            raise Http404(f"no {self.opts.verbose_name} with this id")
        return obj

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = super().get_list_filter(request)
        if admin_organization_ids(request) is None:
            return filters
        # A related filter would list every organization (or mailbox, workspace...) by name;
        # offer only the values the member's own rows have.
        return [self._related_only(item) for item in filters]

    def _related_only(self, item: Any) -> Any:
        if not isinstance(item, str):
            return item
        try:
            field = get_fields_from_path(self.model, item)[-1]
        except (FieldDoesNotExist, NotRelationField):
            return item
        return (item, admin.RelatedOnlyFieldListFilter) if field.is_relation else item

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) and self._administers_any(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (
            super().has_view_permission(request, obj)
            and self._administers_any(request)
            and self._in_scope(request, obj)
        )

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        # *args: inlines pass the parent object too.
        return super().has_add_permission(request, *args) and self._administers_any(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (
            super().has_change_permission(request, obj)
            and self._administers_any(request)
            and self._in_scope(request, obj)
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return (
            super().has_delete_permission(request, obj)
            and self._administers_any(request)
            and self._in_scope(request, obj)
        )

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if formfield is not None and formfield.queryset is not None:
            formfield.queryset = scope_queryset(request, formfield.queryset)
        return formfield

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_manytomany(db_field, request, **kwargs)
        if formfield is not None and formfield.queryset is not None:
            formfield.queryset = scope_queryset(request, formfield.queryset)
        return formfield

    def response_action(
        self, request: HttpRequest, queryset: QuerySet[Any], *args: Any, **kwargs: Any
    ) -> Any:
        # The changelist's queryset is already scoped; this keeps an action from ever
        # receiving another tenant's row, whoever builds the queryset.
        return super().response_action(request, scope_queryset(request, queryset), *args, **kwargs)


class SuperuserOnlyAdmin(CheckedSelectionAdmin):
    """Global tables (schedules, raw results, users, tokens): superusers only."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser and super().has_module_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)


def superuser_only_register(*model_classes: type[models.Model]) -> None:
    """Re-register other apps' admin pages of these models as superuser-only."""
    for model in model_classes:
        current = admin.site._registry.get(model)
        if current is None or isinstance(current, SuperuserOnlyAdmin):
            continue
        base = type(current)
        admin.site.unregister(model)
        admin.site.register(model, type(base.__name__, (SuperuserOnlyAdmin, base), {}))
