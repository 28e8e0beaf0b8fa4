"""Admin pages of the integrations: configuration, ledgers and "Sync now"."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from integrations.models import SlackChannel, SlackEvent, SlackMessage, SlackWorkspace
from integrations.slack import services as slack_services
from integrations.slack.client import SlackTransientError
from taskops.admin import lag_column, last_run_column
from taskops.services import triggered_by_label
from tickets.admin_scoping import OrganizationScopedAdmin
from tickets.models import Organization, Role
from tickets.selectors import organization_list_for_user

SYNC_SLACK_TASK = "integrations.tasks.sync_slack_tickets"

# ------------------------------------------------------------------------------
# --- Slack ---
# ------------------------------------------------------------------------------


def _sync_organizations(
    modeladmin: admin.ModelAdmin, request: HttpRequest, organizations: set[Organization]
) -> None:
    """Enqueue one Slack sync per organization and tell the user the task ids."""
    triggered_by = triggered_by_label(request.user)
    for organization in sorted(organizations, key=lambda org: org.slug):
        task_id = slack_services.slack_sync_enqueue(
            organization=organization, triggered_by=triggered_by
        )
        modeladmin.message_user(
            request,
            f"Slack sync of {organization.slug} enqueued (task {task_id}).",
            messages.SUCCESS,
        )


class SlackWorkspaceForm(forms.ModelForm):
    """The bot token is write-only: typed into a password field, never shown again."""

    new_bot_token = forms.CharField(
        label="Bot token",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="xoxb-… (stored encrypted; leave empty to keep the current token).",
    )

    class Meta:
        model = SlackWorkspace
        fields = ["organization", "team_id", "name", "enabled"]

    def clean_new_bot_token(self) -> str:
        token: str = self.cleaned_data["new_bot_token"]
        if not token and not (self.instance.pk and self.instance.bot_token):
            raise forms.ValidationError("a new workspace needs its bot token")
        if token and not token.startswith("xox"):
            raise forms.ValidationError("a Slack token starts with xox (e.g. xoxb-…)")
        return token

    def clean(self) -> dict[str, Any]:
        """A new workspace, a new token or another team: ``auth.test`` must prove the team."""
        cleaned = super().clean() or {}
        team_id, token = cleaned.get("team_id"), cleaned.get("new_bot_token")
        self._identity = None
        if not team_id or self.errors:
            return cleaned
        if not (token or self.instance.pk is None or team_id != self.instance.team_id):
            return cleaned
        taken = SlackWorkspace.objects.filter(verified_team_id=team_id)
        if self.instance.pk is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            self.add_error("team_id", "this workspace is already connected")
            return cleaned
        try:
            self._identity = slack_services.slack_token_verify(
                team_id=team_id, bot_token=token or self.instance.bot_token
            )
        except slack_services.SlackTokenRejected as exc:
            self.add_error("new_bot_token", exc.reason)
        except SlackTransientError:
            self.add_error(
                "new_bot_token", "Slack could not be reached to verify the token; try again."
            )
        return cleaned

    def save(self, commit: bool = True) -> SlackWorkspace:
        workspace: SlackWorkspace = super().save(commit=False)
        token = self.cleaned_data.get("new_bot_token")
        if token:
            workspace.bot_token = token
            workspace.bot_user_id = workspace.bot_id = workspace.last_error = ""
            # A pasted token does not rotate: the old install's refresh token is not its own.
            workspace.bot_refresh_token, workspace.bot_token_expires_at = "", None
        identity = getattr(self, "_identity", None)
        if identity is not None:
            workspace.verified_team_id, workspace.verified_at = identity.team_id, timezone.now()
            workspace.bot_user_id, workspace.bot_id = identity.user_id or "", identity.bot_id or ""
        if commit:
            workspace.save()
        return workspace


class SlackConnectForm(forms.Form):
    """The organization a new workspace will belong to (those the user administers)."""

    organization = forms.ModelChoiceField(queryset=Organization.objects.none())

    def __init__(self, *args: Any, organizations: QuerySet[Organization], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["organization"].queryset = organizations.order_by("slug")  # type: ignore[attr-defined]


class SlackChannelInline(admin.TabularInline):
    model = SlackChannel
    extra = 0
    fields = ["channel_id", "name", "enabled", "latest_ts", "last_sync_at", "last_error"]
    readonly_fields = ["latest_ts", "last_sync_at", "last_error"]


@admin.register(SlackWorkspace)
class SlackWorkspaceAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    form = SlackWorkspaceForm
    list_display = [
        "team_id",
        "name",
        "organization",
        "enabled",
        "verified_at",
        "bot_user_id",
        "installed_via_oauth",
        "disabled_reason",
        "last_sync_at",
        "taken_last_run",
        "lag",
        "last_error",
    ]
    list_filter = ["enabled", "installed_via_oauth", "organization"]
    search_fields = ["team_id", "name", "organization__slug"]
    list_select_related = ["organization"]
    readonly_fields = [
        "disabled_reason",
        "disabled_at",
        "bot_user_id",
        "bot_id",
        "verified_team_id",
        "verified_at",
        "installed_via_oauth",
        "installed_at",
        "installed_by",
        "scopes",
        "bot_token_expires_at",
        "last_sync_at",
        "taken_last_run",
        "lag",
        "last_error",
        "last_error_at",
        "created_at",
        "updated_at",
    ]
    # new_bot_token is the form's write-only field; the stored token is never rendered.
    fields = ["organization", "team_id", "name", "new_bot_token", "enabled", *readonly_fields]
    inlines = [SlackChannelInline]
    actions = ["sync_now"]
    change_list_template = "admin/integrations/slackworkspace/change_list.html"

    # Messages seen by the organization's newest successful Slack sync.
    taken_last_run = last_run_column(
        task=SYNC_SLACK_TASK,
        kwargs=lambda workspace: {"organization_id": workspace.organization_id},
        key="seen",
        description="messages taken (last run)",
    )
    # last_sync_at is set on success only.
    lag = lag_column("last_sync_at")

    def get_urls(self) -> list[URLPattern]:
        connect = path(
            "connect/",
            self.admin_site.admin_view(self.connect_view),
            name="integrations_slackworkspace_connect",
        )
        return [connect, *super().get_urls()]

    def connect_view(self, request: HttpRequest) -> HttpResponse:
        """Choose one of the organizations the user administers, then "Add to Slack"."""
        organizations = organization_list_for_user(user=request.user, min_role=Role.ADMIN)
        form = SlackConnectForm(request.POST or None, organizations=organizations)
        if request.method == "POST" and form.is_valid():
            query = urlencode(
                {"organization": form.cleaned_data["organization"].pk, "from": "admin"}
            )
            return HttpResponseRedirect(f"{reverse('slack-install')}?{query}")
        context = {
            **self.admin_site.each_context(request),
            "title": "Connect a Slack workspace",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/integrations/slackworkspace/connect.html", context)

    @admin.action(description="Sync now")
    def sync_now(self, request: HttpRequest, queryset: QuerySet[SlackWorkspace]) -> None:
        _sync_organizations(self, request, {ws.organization for ws in queryset})


@admin.register(SlackChannel)
class SlackChannelAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    list_display = [
        "channel_id",
        "name",
        "workspace",
        "enabled",
        "latest_ts",
        "sync_in_progress",
        "last_sync_at",
        "last_error",
    ]
    list_filter = ["enabled", "workspace__organization", "workspace"]
    search_fields = ["channel_id", "name", "workspace__team_id"]
    list_select_related = ["workspace__organization"]
    readonly_fields = [
        "sync_cursor",
        "pass_oldest",
        "pass_newest",
        "latest_ts",
        "last_sync_at",
        "last_error",
        "last_error_at",
        "created_at",
        "updated_at",
    ]
    actions = ["sync_now", "resync_history"]

    @admin.display(boolean=True, description="Pass in progress")
    def sync_in_progress(self, channel: SlackChannel) -> bool:
        return bool(channel.sync_cursor)

    @admin.action(description="Sync now")
    def sync_now(self, request: HttpRequest, queryset: QuerySet[SlackChannel]) -> None:
        _sync_organizations(self, request, {ch.workspace.organization for ch in queryset})

    @admin.action(description="Re-read the whole history on the next sync")
    def resync_history(self, request: HttpRequest, queryset: QuerySet[SlackChannel]) -> None:
        # Safe: the ledger keeps already-ingested messages from becoming tickets twice.
        count = queryset.update(sync_cursor="", pass_oldest="", pass_newest="", latest_ts="")
        self.message_user(request, f"{count} channel(s) will re-read their history.")


@admin.register(SlackMessage)
class SlackMessageAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    """The ingestion ledger: read-only audit rows."""

    list_display = [
        "ts",
        "channel_id",
        "team_id",
        "kind",
        "user_id",
        "ticket",
        "revision_count",
        "deleted_at",
        "received_via",
        "created_at",
    ]
    list_filter = [
        "kind",
        "received_via",
        "organization",
        ("deleted_at", admin.EmptyFieldListFilter),
    ]
    search_fields = ["ts", "thread_ts", "channel_id", "team_id", "user_id", "text"]
    date_hierarchy = "created_at"
    list_select_related = ["ticket", "organization"]
    list_per_page = 100
    actions = ["sync_now"]

    @admin.display(description="Revisions")
    def revision_count(self, row: SlackMessage) -> int:
        return len(row.revisions or [])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Sync now")
    def sync_now(self, request: HttpRequest, queryset: QuerySet[SlackMessage]) -> None:
        _sync_organizations(self, request, {row.organization for row in queryset})


@admin.register(SlackEvent)
class SlackEventAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    """The Events API ledger: one row per event id, however often Slack delivered it."""

    list_display = [
        "event_id",
        "event_type",
        "subtype",
        "team_id",
        "channel_id",
        "status",
        "note",
        "deliveries",
        "received_at",
        "processed_at",
    ]
    list_filter = ["status", "event_type", "subtype"]
    search_fields = ["event_id", "team_id", "channel_id"]
    date_hierarchy = "received_at"
    list_select_related = ["workspace"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
