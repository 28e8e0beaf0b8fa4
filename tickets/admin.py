"""Admin pages of the core."""

from __future__ import annotations

from typing import Any

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.http import HttpRequest
from rest_framework.authtoken.models import TokenProxy

from tickets import services
from tickets.admin_scoping import OrganizationScopedAdmin, scope_queryset, superuser_only_register
from tickets.models import LabelChange, Membership, Organization, Ticket, TicketMessage


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # Staff who are not superusers pick only people already in organizations they run.
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if formfield is not None and formfield.queryset is not None:
            formfield.queryset = scope_queryset(request, formfield.queryset)
        return formfield


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    list_display = ["slug", "name", "confidence_threshold", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    # A new tenant, or the end of one, is a superuser's decision.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_superuser and super().has_add_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser and super().has_delete_permission(request, obj)


@admin.register(Membership)
class MembershipAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role", "organization"]
    search_fields = ["user__username", "organization__slug"]
    list_select_related = ["user", "organization"]
    autocomplete_fields = ["user", "organization"]


class TicketMessageInline(admin.TabularInline):
    model = TicketMessage
    extra = 0
    fields = ["source", "author", "body", "external_id", "edited_at", "deleted_at", "created_at"]
    readonly_fields = fields


class LabelChangeInline(admin.TabularInline):
    model = LabelChange
    extra = 0
    fields = ["field", "previous_value", "new_value", "changed_by", "changed_at"]
    readonly_fields = fields
    can_delete = False


@admin.register(Ticket)
class TicketAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    list_display = [
        "id",
        "subject",
        "organization",
        "source",
        "status",
        "category",
        "category_source",
        "priority",
        "needs_review",
        "created_at",
    ]
    list_filter = [
        "organization",
        "source",
        "status",
        "needs_review",
        "category_source",
        "category",
    ]
    search_fields = ["subject", "body", "external_id", "requester"]
    date_hierarchy = "created_at"
    list_select_related = ["organization"]
    list_per_page = 50
    readonly_fields = [
        "source",
        "external_id",
        "category_source",
        "priority_source",
        "created_at",
        "updated_at",
    ]
    inlines = [TicketMessageInline, LabelChangeInline]

    def save_model(self, request: HttpRequest, obj: Ticket, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Edits go through the service, so a corrected label becomes a training label.
        data = {name: form.cleaned_data[name] for name in form.changed_data}
        services.ticket_update(ticket=obj, data=data, user=request.user)


@admin.register(LabelChange)
class LabelChangeAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    list_display = ["ticket", "field", "previous_value", "new_value", "changed_by", "changed_at"]
    list_filter = ["field"]
    date_hierarchy = "changed_at"
    list_select_related = ["ticket", "changed_by"]
    readonly_fields = ["ticket", "field", "previous_value", "new_value", "changed_by", "changed_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


# Global tables: people, groups, API tokens and login attempts are superusers' business
# (a staff member who could edit users could make themselves a superuser).
superuser_only_register(
    get_user_model(), Group, TokenProxy, AccessAttempt, AccessLog, AccessFailureLog
)
