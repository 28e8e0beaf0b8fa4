"""Integration routes under /api/v1/: each provider's configuration, events, and sync triggers."""

from django.urls import URLPattern, URLResolver, re_path

from integrations.email import views as email_views
from integrations.slack import events as slack_events
from integrations.slack import views as slack_views
from integrations.sync import SYNC_SOURCES
from integrations.views import SyncAllView, SyncOrganizationView, SyncTriggerView
from tickets.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register(
    "integrations/slack/workspaces", slack_views.SlackWorkspaceViewSet, basename="slack-workspace"
)
router.register(
    "integrations/slack/channels", slack_views.SlackChannelViewSet, basename="slack-channel"
)
router.register("integrations/mailboxes", email_views.MailboxViewSet, basename="mailbox")
router.register(
    "integrations/inbound-emails", email_views.InboundEmailViewSet, basename="inbound-email"
)

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
    re_path(
        r"^integrations/slack/install/?$",
        slack_views.SlackInstallView.as_view(),
        name="slack-install",
    ),
    re_path(
        r"^integrations/slack/oauth/callback/?$",
        slack_views.SlackOAuthCallbackView.as_view(),
        name="slack-oauth-callback",
    ),
    *(
        re_path(
            rf"^tasks/sync/{source}/?$",
            SyncTriggerView.as_view(source=source),
            name=f"sync-{source}",
        )
        for source in SYNC_SOURCES
    ),
    # Every source at once (integrations.tasks.sync_organization_data).
    re_path(
        r"^tasks/sync/organization/?$",
        SyncOrganizationView.as_view(),
        name="sync-organization",
    ),
    re_path(r"^tasks/sync/all/?$", SyncAllView.as_view(), name="sync-all"),
    *router.urls,
]
