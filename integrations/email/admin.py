"""Admin pages of the e-mail integration: mailboxes (write-only password) and the ledger."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from integrations.email import selectors as email_selectors
from integrations.email import services as email_services
from integrations.models import EmailAttachment, InboundEmail, Mailbox, MailboxAuthMethod
from taskops import selectors as task_selectors
from taskops.admin import lag_display
from taskops.services import triggered_by_label
from tickets.admin_scoping import OrganizationScopedAdmin, scope_queryset

SYNC_MAILBOX_TASK = "integrations.tasks.sync_mailbox_task"


class MailboxForm(forms.ModelForm):
    """The password is typed into a password field and never shown again."""

    new_password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted; leave empty to keep the current password.",
    )

    class Meta:
        model = Mailbox
        fields = [
            "organization",
            "name",
            "host",
            "port",
            "security",
            "username",
            "folder",
            "processed_folder",
            "enabled",
            "auth_method",
            "oauth_provider",
            "oauth_authorize_url",
            "oauth_token_url",
            "oauth_scopes",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Password login unless chosen otherwise (forms posted without the field keep working).
        self.fields["auth_method"].required = False

    def clean_auth_method(self) -> str:
        return self.cleaned_data.get("auth_method") or MailboxAuthMethod.PASSWORD

    def clean_new_password(self) -> str:
        password: str = self.cleaned_data["new_password"]
        if self.data.get("auth_method", self.instance.auth_method) == MailboxAuthMethod.OAUTH2:
            return password  # OAuth2 mailboxes log in with the consented grant
        has_password = self.instance.pk and email_selectors.mailbox_has_password(
            mailbox=self.instance
        )
        if not password and not has_password:
            raise forms.ValidationError("a new mailbox needs its password")
        return password

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        folder = cleaned.get("folder") or self.instance.folder
        processed = cleaned.get("processed_folder")
        if processed and processed == folder:
            self.add_error("processed_folder", "must differ from the folder")
        endpoint = email_services.MAILBOX_ENDPOINT_FIELDS
        if self.instance.pk is not None and not cleaned.get("new_password"):
            redirected = [name for name in endpoint if name in self.changed_data]
            if redirected:
                self.add_error(
                    "new_password",
                    f"changing {', '.join(redirected)} needs the mailbox password again",
                )
        if all(cleaned.get(name) not in (None, "") for name in ("host", "port", "security")) and (
            self.instance.pk is None or any(name in self.changed_data for name in endpoint)
        ):
            try:
                email_services.mailbox_destination_check(
                    host=cleaned["host"], port=cleaned["port"], security=cleaned["security"]
                )
            except email_services.MailboxDestinationRefused as exc:
                self.add_error(exc.field, exc.reason)
        return cleaned

    def save(self, commit: bool = True) -> Mailbox:
        mailbox: Mailbox = super().save(commit=False)
        password = self.cleaned_data.get("new_password")
        if password:
            mailbox.password = password
        if commit:
            mailbox.save()
        return mailbox


@admin.register(Mailbox)
class MailboxAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    form = MailboxForm
    list_display = [
        "name",
        "organization",
        "address",
        "security",
        "auth_method",
        "oauth_status",
        "enabled",
        "last_uid",
        "sync_in_progress",
        "last_polled_at",
        "taken_last_run",
        "lag",
        "last_error",
    ]
    list_filter = ["enabled", "security", "auth_method", "oauth_status", "organization"]
    search_fields = ["name", "host", "username", "organization__slug"]
    list_select_related = ["organization"]
    readonly_fields = [
        "uidvalidity",
        "last_uid",
        "last_polled_at",
        "last_success_at",
        "taken_last_run",
        "lag",
        "last_error_kind",
        "last_error",
        "last_error_at",
        "sync_lease_owner",
        "sync_lease_expires_at",
        "oauth_account",
        "oauth_status",
        "oauth_status_reason",
        "oauth_access_expires_at",
        "created_at",
        "updated_at",
    ]
    actions = ["test_connection", "sync_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Mailbox]:
        # Never decrypts a password to show a page (see email_selectors).
        return scope_queryset(request, email_selectors.mailbox_list(organization=None))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and email_selectors.mailbox_has_ingested(mailbox=obj):
            # UIDs belong to one folder: another folder is another mailbox.
            return [*email_services.MAILBOX_LOCATION_FIELDS, *self.readonly_fields]
        return self.readonly_fields

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            *MailboxForm.Meta.fields[:6],
            "new_password",
            *MailboxForm.Meta.fields[6:],
            *self.readonly_fields,
        ]

    @admin.display(description="messages taken (last run)")
    def taken_last_run(self, mailbox: Mailbox) -> Any:
        """Mails fetched by the mailbox's newest successful sync task (from the ledger)."""
        if mailbox.pk is None:
            return "-"
        record = task_selectors.task_last_success(
            name=SYNC_MAILBOX_TASK, kwargs={"mailbox_id": mailbox.pk}
        )
        if record is None or not isinstance(record.result, dict):
            return "-"
        return record.result.get("fetched", "-")

    @admin.display(description="lag", ordering="last_success_at")
    def lag(self, mailbox: Mailbox) -> str:
        """Now minus the last successful sync."""
        return lag_display(mailbox.last_success_at)

    @admin.display(boolean=True, description="Polling now")
    def sync_in_progress(self, mailbox: Mailbox) -> bool:
        return email_selectors.mailbox_sync_in_progress(mailbox=mailbox)

    @admin.action(description="Test connection")
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Mailbox]) -> None:
        # In a task on the sync queue, never in the web process; the ledger shows the result.
        triggered_by = triggered_by_label(request.user)
        for mailbox in queryset:
            task_id = email_services.mailbox_test_connection_enqueue(
                mailbox=mailbox, triggered_by=triggered_by
            )
            self.message_user(
                request,
                f"Connection test of {mailbox.name} enqueued (task {task_id}); its result is "
                "in the task list.",
                messages.SUCCESS,
            )

    @admin.action(description="Sync now")
    def sync_now(self, request: HttpRequest, queryset: QuerySet[Mailbox]) -> None:
        triggered_by = triggered_by_label(request.user)
        for mailbox in queryset:
            task_id = email_services.mailbox_poll_enqueue(
                mailbox=mailbox, triggered_by=triggered_by
            )
            self.message_user(
                request, f"Poll of {mailbox.name} enqueued (task {task_id}).", messages.SUCCESS
            )


class EmailAttachmentInline(admin.TabularInline):
    model = EmailAttachment
    extra = 0
    fields = ["filename", "content_type", "size", "file", "skipped_reason"]
    readonly_fields = ["filename", "content_type", "size", "file", "skipped_reason"]
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(InboundEmail)
class InboundEmailAdmin(OrganizationScopedAdmin, admin.ModelAdmin):
    """The ingestion ledger: read-only audit rows, one per message seen."""

    list_display = [
        "received_at",
        "mailbox",
        "uid",
        "state",
        "subject",
        "from_address",
        "size",
        "body_truncated",
        "message_id",
        "ticket",
        "flagged_at",
    ]
    list_filter = ["state", "body_truncated", "mailbox", "received_at", "organization"]
    search_fields = ["message_id", "subject", "from_address"]
    date_hierarchy = "received_at"
    list_select_related = ["mailbox", "ticket"]
    list_per_page = 100
    inlines = [EmailAttachmentInline]
    exclude = ["raw_file"]
    readonly_fields = ["original"]

    @admin.display(description="Original message")
    def original(self, row: InboundEmail) -> str:
        if not row.raw_file:
            return "not kept (past ZENITH_RAW_MAIL_RETENTION_DAYS)"
        url = reverse("inbound-email-raw", kwargs={"pk": row.pk})
        return format_html('<a href="{}">download .eml ({} bytes)</a>', url, row.size)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
