"""Integration routes under /api/v1/: each provider's configuration, events, and sync triggers."""

from django.urls import URLPattern, URLResolver, re_path

from integrations.email import views as email_views
from integrations.slack import events as slack_events
from integrations.slack import views as slack_views
from integrations.sync import SYNC_SOURCES
from integrations.views import SyncTriggerView
from tickets.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register(
    "integrations/slack/workspaces", slack_views.SlackWorkspaceViewSet, basename="slack-workspace"
)
router.register(
    "integrations/slack/channels", slack_views.SlackChannelViewSet, basename="slack-channel"
)
router.register("integrations/mailboxes", email_views.MailboxViewSet, basename="mailbox")

urlpatterns: list[URLPattern | URLResolver] = [
    re_path(
        r"^integrations/mailboxes/oauth/callback/?$",
        email_views.MailboxOAuthCallbackView.as_view(),
        name="mailbox-oauth-callback",
    ),
    re_path(
        r"^integrations/slack/events/?$",
        slack_events.slack_events_view,
        name="slack-events",
    ),
    *(
        re_path(
            rf"^tasks/sync/{source}/?$",
            SyncTriggerView.as_view(source=source),
            name=f"sync-{source}",
        )
        for source in SYNC_SOURCES
    ),
    *router.urls,
]
