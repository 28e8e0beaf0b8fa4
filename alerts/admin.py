"""Admin pages of the alerts: rules (enable, disable, evaluate now), incidents and deliveries."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from alerts import services
from alerts.models import AlertDelivery, AlertIncident, AlertRule
from integrations.models import SlackWorkspace
from taskops.admin import ReadOnlyAdmin
from tickets.admin_scoping import OrganizationScopedAdmin


class AlertRuleForm(forms.ModelForm):
    """Checks a rule as the API does (pattern, window, destinations), naming each field."""

    # Left empty, a new rule gets its kind's default, as over the API.
    threshold = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=services.MAX_THRESHOLD,
        help_text=f"{AlertRule._meta.get_field('threshold').help_text}. Empty: 1 failure or "
        f"integration; {services.DEFAULT_ACCURACY_DROP_POINTS} points for model_accuracy",
    )

    class Meta:
        model = AlertRule
        fields = ["organization", *services.RULE_FIELDS]
        help_texts = {"email_recipients": 'a JSON list, e.g. ["ops@example.com"]'}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.instance.pk:
            self.initial.pop("threshold", None)

    def rule_values(self) -> dict[str, Any]:
        """The rule's fields as the services take them (an empty threshold left out)."""
        cleaned = self.cleaned_data
        values = {name: cleaned[name] for name in services.RULE_FIELDS if name in cleaned}
        if values.get("threshold") is None:
            values.pop("threshold", None)
        return values

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        organization = cleaned.get("organization")
        if organization is None:
            return cleaned
        values = self.rule_values()
        rule = self.instance if self.instance.pk else None
        problems = services.alert_rule_problems(organization=organization, values=values, rule=rule)
        for name, message in problems.items():
            self.add_error(name if name in self.fields else None, message)
        return cleaned


@admin.register(AlertRule)
class AlertRuleAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    form = AlertRuleForm
    list_display = [
        "name",
        "organization",
        "kind",
        "task_pattern",
        "threshold",
        "window_minutes",
        "slack_channel",
        "enabled",
        "last_evaluated_at",
    ]
    list_filter = ["enabled", "kind", "organization"]
    search_fields = ["name", "task_pattern"]
    list_select_related = ["organization"]
    readonly_fields = ["last_evaluated_at", "created_at", "updated_at"]
    actions = ["enable_rules", "disable_rules", "evaluate_rules"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "slack_workspace":
            # The choices only need names; the bot token is never decrypted for them.
            kwargs["queryset"] = SlackWorkspace.objects.defer("bot_token")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: AlertRule, form: Any, change: bool) -> None:
        # The form already checked the rule as the services do.
        data = form.rule_values()
        if change:
            services.alert_rule_update(rule=obj, data=data)
        else:
            organization = form.cleaned_data["organization"]
            obj.pk = services.alert_rule_create(organization=organization, **data).pk

    @admin.action(description="Enable the selected rules")
    def enable_rules(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        changed = services.alert_rules_set_enabled(rules=queryset, enabled=True)
        self.message_user(request, f"{changed} rule(s) enabled.", messages.SUCCESS)

    @admin.action(description="Disable the selected rules (closes their open incidents)")
    def disable_rules(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        changed = services.alert_rules_set_enabled(rules=queryset, enabled=False)
        self.message_user(request, f"{changed} rule(s) disabled.", messages.SUCCESS)

    @admin.action(description="Evaluate the selected rules now")
    def evaluate_rules(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> None:
        for rule in queryset:
            try:
                outcome = services.alert_rule_evaluate(rule=rule)
            except Exception as exc:  # report a broken rule, evaluate the others
                self.message_user(request, f"{rule.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{rule.name}: {outcome}", messages.SUCCESS)


class AlertDeliveryInline(admin.TabularInline):
    model = AlertDelivery
    extra = 0
    can_delete = False
    fields = ["kind", "channel", "target", "state", "attempts", "error", "sent_at"]
    readonly_fields = ["kind", "channel", "target", "state", "attempts", "error", "sent_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AlertIncident)
class AlertIncidentAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = [
        "id",
        "rule",
        "organization",
        "state",
        "count",
        "opened_at",
        "last_seen_at",
        "resolved_at",
        "resolution",
    ]
    list_filter = ["state", "organization", "rule__kind", ("opened_at", admin.DateFieldListFilter)]
    search_fields = ["rule__name", "summary"]
    date_hierarchy = "opened_at"
    list_select_related = ["rule", "organization"]
    inlines = [AlertDeliveryInline]


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(OrganizationScopedAdmin, ReadOnlyAdmin):
    list_display = [
        "id",
        "incident",
        "kind",
        "channel",
        "target",
        "state",
        "attempts",
        "created_at",
        "sent_at",
        "short_error",
    ]
    list_filter = ["state", "channel", "kind", "incident__organization"]
    search_fields = ["target", "incident__rule__name"]
    date_hierarchy = "created_at"
    list_select_related = ["incident__rule"]
    actions = ["resend"]

    def has_operate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("alerts.change_alertrule")

    @admin.display(description="error")
    def short_error(self, obj: AlertDelivery) -> str:
        return obj.error[:120]

    @admin.action(description="Send the selected failed deliveries again", permissions=["operate"])
    def resend(self, request: HttpRequest, queryset: QuerySet[AlertDelivery]) -> None:
        deliveries = list(queryset.select_related("incident"))
        queued = sum(services.alert_delivery_resend(delivery=delivery) for delivery in deliveries)
        skipped = len(deliveries) - queued
        self.message_user(
            request,
            f"{queued} delivery(ies) queued again"
            + (f"; {skipped} not failed, left alone" if skipped else ""),
            messages.SUCCESS,
        )
