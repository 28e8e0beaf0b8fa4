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
from taskops.admin import lag_column, last_run_column
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
        fields = ["organization", *email_services.MAILBOX_CONFIG_FIELDS]

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
        oauth = cleaned.get("auth_method") == MailboxAuthMethod.OAUTH2
        if self.instance.pk is not None and not oauth and not cleaned.get("new_password"):
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
        if self.instance.pk is not None:
            # The API's rules for a change (a moved endpoint drops an OAuth2 grant and
            # the password it was not given) apply here too: the service decides and saves
            # (with commit=False as well: the admin's later save writes the same row).
            return self._update()
        mailbox: Mailbox = super().save(commit=False)
        password = self.cleaned_data.get("new_password")
        if password:
            mailbox.password = password
        if commit:
            mailbox.save()
        return mailbox

    def _update(self) -> Mailbox:
        stored = Mailbox.objects.get(pk=self.instance.pk)
        data = {
            name: self.cleaned_data[name]
            for name in self.changed_data
            if name in email_services.MAILBOX_CONFIG_FIELDS
        }
        if self.cleaned_data.get("new_password"):
            data["password"] = self.cleaned_data["new_password"]
        if "organization" in self.changed_data:
            stored.organization = self.cleaned_data["organization"]
            stored.save(update_fields=["organization", "updated_at"])
        mailbox = email_services.mailbox_update(mailbox=stored, data=data)
        self.instance = mailbox
        self.save_m2m = lambda: None  # the admin calls it after save(commit=False); none here
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
        fields = list(MailboxForm.Meta.fields)
        # The password right below the account it belongs to.
        fields.insert(fields.index("username") + 1, "new_password")
        return [*fields, *self.readonly_fields]

    taken_last_run = last_run_column(
        task=SYNC_MAILBOX_TASK,
        kwargs=lambda mailbox: {"mailbox_id": mailbox.pk},
        key="fetched",
        description="messages taken (last run)",
    )
    lag = lag_column("last_success_at")

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
