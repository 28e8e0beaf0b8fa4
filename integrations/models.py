"""Integration configuration and ingestion ledgers (Slack; e-mail follows in its own section)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from integrations.crypto import decrypt_text, encrypt_text
from tickets.models import Organization, Ticket, TicketMessage


class EncryptedTextField(models.TextField):
    """Text kept in Python as plaintext and stored as a Fernet token, never in the clear.

    Encryption uses ``settings.FIELD_ENCRYPTION_KEYS`` (first key encrypts, all decrypt).
    The stored value is not searchable; an empty value is stored as "" (no credential).
    """

    description = "Text encrypted at rest with Fernet"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if not value:
            return value
        return decrypt_text(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt_text(str(value))


# ------------------------------------------------------------------------------
# --- Slack ---
# ------------------------------------------------------------------------------


class SlackWorkspace(models.Model):
    """A Slack workspace (team) installed for an organization, with its bot token."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="slack_workspaces"
    )
    # What the admin typed. It means nothing until ``auth.test`` of the bot token answered
    # this team (``verified_team_id``): events name only their team, so a team leads to
    # the one workspace whose token was verified for it, and no one can claim another's.
    team_id = models.CharField(max_length=32)
    name = models.CharField(max_length=200, blank=True, default="")
    bot_token = EncryptedTextField(blank=True, default="")
    # Who the token is (from auth.test), so the bot's own posts are never ingested.
    bot_user_id = models.CharField(max_length=32, blank=True, default="")
    bot_id = models.CharField(max_length=32, blank=True, default="")
    # The team ``auth.test`` answered for the current token ("" until proven), and when.
    verified_team_id = models.CharField(max_length=32, blank=True, default="")
    verified_at = models.DateTimeField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    # "Add to Slack" (OAuth v2): who installed it and what Slack granted. A workspace
    # installed this way was proved by Slack's own answer naming its team.
    installed_via_oauth = models.BooleanField(default=False)
    installed_at = models.DateTimeField(null=True, blank=True)
    installed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    app_id = models.CharField(max_length=32, blank=True, default="")
    scopes = models.TextField(blank=True, default="")
    # Token rotation: bot_token expires at bot_token_expires_at and is renewed with the
    # refresh token; token_refresh_claimed_at lets one process at a time spend it.
    bot_refresh_token = EncryptedTextField(blank=True, default="")
    bot_token_expires_at = models.DateTimeField(null=True, blank=True)
    token_refresh_claimed_at = models.DateTimeField(null=True, blank=True)
    # Set when Slack disabled the workspace (app uninstalled, tokens revoked), not an admin.
    disabled_reason = models.CharField(max_length=255, blank=True, default="")
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization_id", "team_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "team_id"], name="uniq_slack_team_per_org"
            ),
            models.UniqueConstraint(
                fields=["verified_team_id"],
                condition=~models.Q(verified_team_id=""),
                name="uniq_slack_verified_team",
            ),
        ]

    def __str__(self) -> str:
        return self.name or self.team_id

    @property
    def verified(self) -> bool:
        """The current token was proven (``auth.test``) to belong to ``team_id``."""
        return bool(self.verified_team_id) and self.verified_team_id == self.team_id


class SlackOAuthState(models.Model):
    """An "Add to Slack" state: bound to an organization and user, single use, short-lived."""

    state = models.CharField(max_length=64, unique=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    # Where the browser goes after a successful install (a local path, e.g. the admin).
    return_to = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"state for {self.organization_id} by {self.user_id}"


class SlackChannel(models.Model):
    """A channel whose messages become tickets, with its history-sync position."""

    workspace = models.ForeignKey(SlackWorkspace, on_delete=models.CASCADE, related_name="channels")
    channel_id = models.CharField(max_length=32)
    name = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)
    # A history pass walks newest-first from the newest message down to ``pass_oldest``;
    # ``sync_cursor`` is saved with every committed page so a killed pass resumes there.
    sync_cursor = models.CharField(max_length=512, blank=True, default="")
    pass_oldest = models.CharField(max_length=32, blank=True, default="")
    pass_newest = models.CharField(max_length=32, blank=True, default="")
    # Newest ts of the last completed pass: the next pass starts above it.
    latest_ts = models.CharField(max_length=32, blank=True, default="")
    last_sync_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["workspace_id", "name", "channel_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "channel_id"], name="uniq_slack_channel_per_workspace"
            )
        ]

    def __str__(self) -> str:
        return f"#{self.name or self.channel_id}"

    def get_organization_id(self) -> int:
        return self.workspace.organization_id


class SlackMessageKind(models.TextChoices):
    TICKET = "ticket", "Ticket"
    REPLY = "reply", "Thread reply"


class SlackMessage(models.Model):
    """The ledger: each Slack message once, and the ticket or follow-up it became."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="slack_messages"
    )
    team_id = models.CharField(max_length=32)
    channel_id = models.CharField(max_length=32)
    ts = models.CharField(max_length=32)
    thread_ts = models.CharField(max_length=32, blank=True, default="")
    kind = models.CharField(max_length=16, choices=SlackMessageKind.choices)
    user_id = models.CharField(max_length=32, blank=True, default="")
    text = models.TextField(blank=True, default="")
    # SET_NULL: a ticket deleted in Zenith must not come back on the next sync.
    ticket = models.OneToOneField(
        Ticket,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="slack_origin",
    )
    ticket_message = models.OneToOneField(
        TicketMessage,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="slack_origin",
    )
    # Earlier texts, oldest first: [{"text", "edited_ts", "replaced_at"}].
    revisions = models.JSONField(default=list, blank=True)
    edited_ts = models.CharField(max_length=32, blank=True, default="")
    # Thread parents: the newest reply already ingested (replies are fetched above it).
    latest_reply_ts = models.CharField(max_length=32, blank=True, default="")
    deleted_at = models.DateTimeField(null=True, blank=True)
    received_via = models.CharField(max_length=8, default="sync")  # "event" or "sync"
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["team_id", "channel_id", "ts"], name="uniq_slack_message"
            )
        ]
        indexes = [models.Index(fields=["organization", "created_at"])]

    def __str__(self) -> str:
        return f"{self.team_id}:{self.channel_id}:{self.ts}"

    @property
    def external_id(self) -> str:
        return f"{self.team_id}:{self.channel_id}:{self.ts}"


class SlackEventStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored"


class SlackEvent(models.Model):
    """The event-id ledger: a delivery Slack retries finds its row here and does nothing."""

    event_id = models.CharField(max_length=64, unique=True)
    team_id = models.CharField(max_length=32)
    workspace = models.ForeignKey(
        SlackWorkspace, on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    event_type = models.CharField(max_length=64, blank=True, default="")
    subtype = models.CharField(max_length=64, blank=True, default="")
    channel_id = models.CharField(max_length=32, blank=True, default="")
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=SlackEventStatus.choices, default=SlackEventStatus.PENDING
    )
    note = models.CharField(max_length=255, blank=True, default="")
    deliveries = models.PositiveIntegerField(default=1)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["status", "received_at"])]

    def __str__(self) -> str:
        return f"{self.event_id} ({self.event_type}/{self.status})"


class SlackUserProfile(models.Model):
    """Cached ``users.info`` answers, so requesters cost one API call per user per day."""

    team_id = models.CharField(max_length=32)
    user_id = models.CharField(max_length=32)
    name = models.CharField(max_length=255, blank=True, default="")
    real_name = models.CharField(max_length=255, blank=True, default="")
    email = models.CharField(max_length=255, blank=True, default="")
    is_bot = models.BooleanField(default=False)
    found = models.BooleanField(default=True)
    fetched_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team_id", "user_id"], name="uniq_slack_user")
        ]

    def __str__(self) -> str:
        return f"{self.team_id}:{self.user_id}"

    @property
    def display(self) -> str:
        """The requester text of a ticket: "Real Name <email>", or what is known."""
        label = self.real_name or self.name
        if label and self.email:
            return f"{label} <{self.email}>"
        return self.email or label or self.user_id


# ------------------------------------------------------------------------------
# --- E-mail ---
# ------------------------------------------------------------------------------


class MailboxSecurity(models.TextChoices):
    SSL = "ssl", "Implicit TLS (IMAPS)"
    STARTTLS = "starttls", "STARTTLS"
    NONE = "none", "None (local tests only)"


class MailboxAuthMethod(models.TextChoices):
    PASSWORD = "password", "Password (IMAP LOGIN)"
    OAUTH2 = "oauth2", "OAuth2 (XOAUTH2)"


class OAuthProviderName(models.TextChoices):
    MICROSOFT = "microsoft", "Microsoft 365"
    GOOGLE = "google", "Google Workspace"
    GENERIC = "generic", "Other OAuth2 provider"


class OAuthStatus(models.TextChoices):
    NOT_CONNECTED = "", "Not connected"
    CONNECTED = "connected", "Connected"
    NEEDS_CONSENT = "needs_consent", "Needs consent again"


class Mailbox(models.Model):
    """An IMAP folder polled for support mail, with its credentials and sync position.

    The cursor is the ledger itself: the highest UID with an ``InboundEmail`` row under
    the folder's UIDVALIDITY, so it moves in the very commit that stores a message and
    never runs ahead of it; ``last_uid`` mirrors it after every batch. The lease
    (``sync_lease_owner`` until ``sync_lease_expires_at``) keeps two polls off one
    mailbox on any database.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="mailboxes"
    )
    name = models.CharField(max_length=200)
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(default=993)
    security = models.CharField(
        max_length=16, choices=MailboxSecurity.choices, default=MailboxSecurity.SSL
    )
    username = models.CharField(max_length=255)
    password = EncryptedTextField(blank=True, default="")
    folder = models.CharField(max_length=255, default="INBOX")
    # Empty: processed mail stays in the folder, marked \Seen.
    processed_folder = models.CharField(max_length=255, blank=True, default="")
    enabled = models.BooleanField(default=True)
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    last_error_kind = models.CharField(max_length=32, blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)
    sync_lease_owner = models.CharField(max_length=200, blank=True, default="")
    sync_lease_expires_at = models.DateTimeField(null=True, blank=True)
    # OAuth2 (XOAUTH2): consent gives a refresh token; access tokens are cached until
    # shortly before they expire. Both encrypted like the password, never returned.
    auth_method = models.CharField(
        max_length=16, choices=MailboxAuthMethod.choices, default=MailboxAuthMethod.PASSWORD
    )
    oauth_provider = models.CharField(
        max_length=16, choices=OAuthProviderName.choices, blank=True, default=""
    )
    oauth_authorize_url = models.URLField(max_length=500, blank=True, default="")
    oauth_token_url = models.URLField(max_length=500, blank=True, default="")
    oauth_scopes = models.CharField(max_length=500, blank=True, default="")
    oauth_refresh_token = EncryptedTextField(blank=True, default="")
    oauth_access_token = EncryptedTextField(blank=True, default="")
    oauth_access_expires_at = models.DateTimeField(null=True, blank=True)
    oauth_account = models.CharField(max_length=255, blank=True, default="")
    oauth_status = models.CharField(
        max_length=16, choices=OAuthStatus.choices, blank=True, default=""
    )
    oauth_status_reason = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization_id", "name"]
        verbose_name_plural = "mailboxes"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="uniq_mailbox_name_per_org"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def address(self) -> str:
        """Where the mailbox lives, without its credentials: user@host:port/folder."""
        return f"{self.username}@{self.host}:{self.port}/{self.folder}"


class MailboxOAuthState(models.Model):
    """One consent in flight: single use, bound to the mailbox and the admin who started it."""

    state = models.CharField(max_length=64, unique=True)
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="oauth_states")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    code_verifier = EncryptedTextField()
    redirect_uri = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    consumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"consent for {self.mailbox_id} started {self.created_at:%Y-%m-%d %H:%M}"


class InboundEmailState(models.TextChoices):
    TICKET = "ticket", "Opened a ticket"
    FOLLOWUP = "followup", "Added a follow-up"
    DUPLICATE = "duplicate", "Already ingested (same Message-ID)"
    AUTO_REPLY = "auto_reply", "Auto-reply (no ticket)"
    BOUNCE = "bounce", "Bounce (no ticket)"
    REJECTED = "rejected", "Rejected"
    TOO_LARGE = "too_large", "Too large (not downloaded)"


# Rows whose message is the organization's one copy of that Message-ID.
INBOUND_ORIGINAL_STATES = (InboundEmailState.TICKET, InboundEmailState.FOLLOWUP)


class InboundEmail(models.Model):
    """The ledger: each message of a mailbox once (per UIDVALIDITY and UID), and what it became.

    ``message_key`` is the Message-ID (or a digest of the raw message when it has none);
    at most one ticket or follow-up row per organization holds a key, so the same mail
    delivered to two mailboxes, or re-numbered by a new UIDVALIDITY, is ingested once.
    ``flagged_at`` is set once the message was marked \\Seen or moved on the server.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="inbound_emails"
    )
    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="inbound_emails")
    uidvalidity = models.BigIntegerField()
    uid = models.BigIntegerField()
    message_id = models.CharField(max_length=998, blank=True, default="")
    message_key = models.CharField(max_length=255, blank=True, default="")
    state = models.CharField(max_length=16, choices=InboundEmailState.choices)
    reason = models.TextField(blank=True, default="")
    subject = models.CharField(max_length=500, blank=True, default="")
    from_address = models.CharField(max_length=320, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)
    size = models.PositiveIntegerField(default=0)
    # The stored body was cut at ZENITH_MAX_BODY_CHARS (or its HTML at ZENITH_MAX_HTML_BYTES).
    body_truncated = models.BooleanField(default=False)
    # The original message, gzip-compressed in Django's storage (integrations.email.services.raw);
    # emptied by the hourly cleanup after ZENITH_RAW_MAIL_RETENTION_DAYS.
    raw_file = models.CharField(max_length=300, blank=True, default="")
    # The ticket the mail opened, followed up or duplicated; SET_NULL keeps the audit row.
    ticket = models.ForeignKey(
        Ticket,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="inbound_emails",
    )
    ticket_message = models.OneToOneField(
        TicketMessage,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="inbound_email",
    )
    flagged_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name = "inbound e-mail"
        constraints = [
            models.UniqueConstraint(
                fields=["mailbox", "uidvalidity", "uid"], name="uniq_inbound_email_uid"
            ),
            models.UniqueConstraint(
                fields=["organization", "message_key"],
                condition=models.Q(state__in=["ticket", "followup"]) & ~models.Q(message_key=""),
                name="uniq_inbound_email_message_key",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "message_key"]),
            models.Index(fields=["mailbox", "uidvalidity", "flagged_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.mailbox_id}:{self.uidvalidity}:{self.uid} ({self.state})"


def _attachment_path(instance: EmailAttachment, filename: str) -> str:
    email = instance.inbound_email
    return (
        f"email/{email.organization_id}/{email.mailbox_id}/"
        f"{email.uidvalidity}-{email.uid}/{filename}"
    )


class EmailAttachment(models.Model):
    """A file that came with an e-mail: stored, or only described when it was too large."""

    inbound_email = models.ForeignKey(
        InboundEmail, on_delete=models.CASCADE, related_name="attachments"
    )
    ticket = models.ForeignKey(
        Ticket, on_delete=models.SET_NULL, null=True, blank=True, related_name="email_attachments"
    )
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255)
    size = models.BigIntegerField()
    file = models.FileField(upload_to=_attachment_path, max_length=500, blank=True)
    # Why the content was not stored (e.g. over ZENITH_MAX_ATTACHMENT_BYTES); "" when stored.
    skipped_reason = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["inbound_email_id", "id"]

    def __str__(self) -> str:
        return f"{self.filename} ({self.size} bytes)"

    @property
    def stored(self) -> bool:
        return bool(self.file)
