"""E-mail services: mailbox configuration, leases, ingestion, polls and enqueueing.

One message reads as a straight line: UID FETCH BODY.PEEK[] -> ``parse_message`` -> one
transaction holding its ``InboundEmail`` row, the ticket or follow-up, the attachments
and the advanced cursor -> after that commit, ``\\Seen`` or a move on the server.
Nothing is ever deleted from a mailbox.

Crash safety: the cursor is the ledger (the highest UID with a row), so it moves inside
each message's own transaction, and a poll killed at any point leaves every committed
message behind it and every other one ahead of it. A committed message whose flag did
not reach the server (``flagged_at`` is empty) is flagged at the start of the next poll.
The per-message commits are asynchronous (integrations.transactions); a batch is flagged
only after a synchronous commit has made them durable. The ledger's unique keys
(mailbox, UIDVALIDITY, UID and, per organization, the Message-ID) keep a retried or
overlapping poll, a new UIDVALIDITY or a second mailbox from creating anything twice.
"""

from integrations.email.services.enqueue import (
    MANUAL_SYNC_TASK,
    SYNC_MAILBOX_TASK,
    email_sync_enqueue,
    email_sync_organization,
    email_sync_organization_summary,
    mailbox_poll_enqueue,
    mailbox_poll_enqueue_all,
)
from integrations.email.services.ingest import (
    AttachmentStorageError,
    email_ingest,
    email_message_key,
)
from integrations.email.services.lease import (
    MailboxLeaseLost,
    mailbox_lease_acquire,
    mailbox_lease_release,
)
from integrations.email.services.mailboxes import (
    MAILBOX_CONFIG_FIELDS,
    MAILBOX_ENDPOINT_FIELDS,
    MAILBOX_LOCATION_FIELDS,
    TEST_CONNECTION_TASK,
    MailboxDestinationRefused,
    MailboxLocationLocked,
    MailboxPasswordRequired,
    imap_address_allowed,
    mailbox_config,
    mailbox_connect,
    mailbox_create,
    mailbox_credentials_rotate,
    mailbox_destination_check,
    mailbox_test_connection,
    mailbox_test_connection_enqueue,
    mailbox_test_connection_summary,
    mailbox_update,
)
from integrations.email.services.oauth import (
    MailboxNeedsConsent,
    MailboxOAuthError,
    mailbox_access_token,
    mailbox_needs_consent,
    mailbox_oauth_complete,
    mailbox_oauth_provider,
    mailbox_oauth_start,
)
from integrations.email.services.poll import (
    FETCH_BATCH_BYTES,
    FETCH_BATCH_MESSAGES,
    SIZE_LOOKAHEAD,
    MailboxSyncReport,
    mailbox_poll,
    mailbox_poll_summary,
)
from integrations.email.services.raw import raw_mail_prune, raw_mail_read, raw_mail_store

__all__ = [
    "FETCH_BATCH_BYTES",
    "FETCH_BATCH_MESSAGES",
    "MAILBOX_CONFIG_FIELDS",
    "MAILBOX_ENDPOINT_FIELDS",
    "MAILBOX_LOCATION_FIELDS",
    "MANUAL_SYNC_TASK",
    "SIZE_LOOKAHEAD",
    "SYNC_MAILBOX_TASK",
    "TEST_CONNECTION_TASK",
    "AttachmentStorageError",
    "MailboxDestinationRefused",
    "MailboxLeaseLost",
    "MailboxLocationLocked",
    "MailboxNeedsConsent",
    "MailboxOAuthError",
    "MailboxPasswordRequired",
    "MailboxSyncReport",
    "email_ingest",
    "email_message_key",
    "email_sync_enqueue",
    "email_sync_organization",
    "email_sync_organization_summary",
    "imap_address_allowed",
    "logger",
    "mailbox_access_token",
    "mailbox_config",
    "mailbox_connect",
    "mailbox_create",
    "mailbox_credentials_rotate",
    "mailbox_destination_check",
    "mailbox_lease_acquire",
    "mailbox_lease_release",
    "mailbox_needs_consent",
    "mailbox_oauth_complete",
    "mailbox_oauth_provider",
    "mailbox_oauth_start",
    "mailbox_poll",
    "mailbox_poll_enqueue",
    "mailbox_poll_enqueue_all",
    "mailbox_poll_summary",
    "mailbox_test_connection",
    "mailbox_test_connection_enqueue",
    "mailbox_test_connection_summary",
    "mailbox_update",
    "raw_mail_prune",
    "raw_mail_read",
    "raw_mail_store",
]
