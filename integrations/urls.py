"""Integration routes under /api/v1/."""

from django.urls import URLPattern, URLResolver, re_path

from integrations import email_api, slack_events, slack_views, sync_views
from tickets.routers import OptionalSlashRouter

router = OptionalSlashRouter()
# --- Slack ---
router.register(
    "integrations/slack/workspaces", slack_views.SlackWorkspaceViewSet, basename="slack-workspace"
)
router.register(
    "integrations/slack/channels", slack_views.SlackChannelViewSet, basename="slack-channel"
)
# --- E-mail ---
router.register("integrations/mailboxes", email_api.MailboxViewSet, basename="mailbox")

urlpatterns: list[URLPattern | URLResolver] = [
    # --- Every source ---
    re_path(
        r"^tasks/sync/organization/?$",
        sync_views.SyncOrganizationView.as_view(),
        name="sync-organization",
    ),
    re_path(r"^tasks/sync/all/?$", sync_views.SyncAllView.as_view(), name="sync-all"),
    # --- Slack ---
    re_path(
        r"^integrations/slack/events/?$",
        slack_events.slack_events_view,
        name="slack-events",
    ),
    re_path(
        r"^tasks/sync/slack/?$",
        slack_views.SyncTriggerView.as_view(task_name="integrations.tasks.sync_slack_tickets"),
        name="sync-slack",
    ),
    # --- E-mail ---
    re_path(r"^tasks/sync/email/?$", email_api.EmailSyncTriggerView.as_view(), name="sync-email"),
    *router.urls,
]
