"""Slack services: configuration, requesters, ingestion, Events API and history sync.

Both ways in end in ``slack_messages_ingest``, which writes the ledger row
(unique on team, channel and ts) and the ticket or follow-up in one transaction, so a
message that arrives by event and by sync, or twice by either, becomes one ticket.
"""

from integrations.slack.services.events import (
    PROCESS_EVENT_TASK,
    REENQUEUE_PENDING_AFTER,
    slack_event_process,
    slack_event_receive,
    slack_events_prune,
    slack_workspace_for_team,
)
from integrations.slack.services.ingest import (
    IngestReport,
    slack_message_malformed,
    slack_message_user_ids,
    slack_messages_ingest,
)
from integrations.slack.services.requesters import (
    USER_CACHE_TTL,
    RequesterResolver,
)
from integrations.slack.services.sync import (
    SYNC_TASK,
    SyncReport,
    slack_channel_sync,
    slack_sync_enqueue,
    slack_sync_organization,
    slack_sync_organization_summary,
    slack_workspace_sync,
)
from integrations.slack.services.text import (
    SUBJECT_MAX_CHARS,
    slack_client_for,
    slack_external_id,
    slack_plain_text,
    slack_subject,
)
from integrations.slack.services.workspaces import (
    SlackTokenRejected,
    slack_channel_create,
    slack_channel_update,
    slack_token_verify,
    slack_workspace_create,
    slack_workspace_record_verified,
    slack_workspace_update,
)

__all__ = [
    "PROCESS_EVENT_TASK",
    "REENQUEUE_PENDING_AFTER",
    "SUBJECT_MAX_CHARS",
    "SYNC_TASK",
    "USER_CACHE_TTL",
    "IngestReport",
    "RequesterResolver",
    "SlackTokenRejected",
    "SyncReport",
    "slack_channel_create",
    "slack_channel_sync",
    "slack_channel_update",
    "slack_client_for",
    "slack_event_process",
    "slack_event_receive",
    "slack_events_prune",
    "slack_external_id",
    "slack_message_malformed",
    "slack_message_user_ids",
    "slack_messages_ingest",
    "slack_plain_text",
    "slack_subject",
    "slack_sync_enqueue",
    "slack_sync_organization",
    "slack_sync_organization_summary",
    "slack_token_verify",
    "slack_workspace_create",
    "slack_workspace_for_team",
    "slack_workspace_record_verified",
    "slack_workspace_sync",
    "slack_workspace_update",
]
