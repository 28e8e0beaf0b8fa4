"""Entry points: task names and dispatch, manage.py sync_slack, admin pages and "Sync now"."""

from __future__ import annotations

import re
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from integrations.models import SlackChannel, SlackMessage, SlackWorkspace
from integrations.sync import SYNC_SOURCES, UnknownSyncSource
from integrations.tasks import manual_sync_trigger, sync_organization_data, sync_slack_tickets
from tests.integrations.factories import SlackEventFactory
from tests.integrations.slack.conftest import CHANNEL_ID
from tests.support.slack_server import SlackApiServer
from tickets.models import Ticket
from zenith.celery import app

TASKS = [
    "integrations.tasks.sync_slack_tickets",
    "integrations.tasks.sync_organization_data",
    "integrations.tasks.manual_sync_trigger",
    "integrations.tasks.process_slack_event",
]


@pytest.mark.parametrize("name", TASKS)
def test_task_names_are_registered_and_routed_to_sync_tasks(name):
    app.loader.import_default_modules()

    assert name in app.tasks
    route = app.amqp.router.route({}, name, args=(), kwargs={})
    assert route["queue"].name == "sync_tasks"
    assert app.tasks[name].acks_late is True


def test_slack_is_a_registered_sync_source():
    assert "slack" in SYNC_SOURCES


def test_manual_sync_trigger_dispatches_to_the_slack_sync(organization, channel, slack_api):
    slack_api.add_message(CHANNEL_ID, "keyboard missing keys")

    result = manual_sync_trigger.apply(
        kwargs={"organization_id": organization.pk, "source": "slack"}
    )

    assert result.successful(), result.traceback
    assert result.result["slack"]["tickets"] == 1
    assert Ticket.objects.get().body == "keyboard missing keys"


def test_manual_sync_trigger_refuses_an_unknown_source(organization):
    result = manual_sync_trigger.apply(kwargs={"organization_id": organization.pk, "source": "fax"})

    assert result.failed()
    assert isinstance(result.result, UnknownSyncSource)


def test_sync_organization_data_runs_every_source(organization, channel, slack_api, monkeypatch):
    slack_api.add_message(CHANNEL_ID, "badge expired")
    # Only the sources that exist in this tree are asked for.
    monkeypatch.setattr("integrations.sync.SYNC_SOURCES", {"slack": SYNC_SOURCES["slack"]})

    result = sync_organization_data.apply(kwargs={"organization_id": organization.pk})

    assert result.successful(), result.traceback
    assert result.result["slack"]["tickets"] == 1


def test_sync_without_organization_enqueues_one_per_organization(
    organization, channel, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as published:
        result = sync_slack_tickets.apply(kwargs={})

    assert result.successful(), result.traceback
    assert list(result.result["enqueued"]) == ["acme"]
    assert len(published) == 1


def test_sync_slack_command_reports_progress(organization, channel, slack_api: SlackApiServer):
    for i in range(120):
        slack_api.add_message(CHANNEL_ID, f"issue {i}")
    out = StringIO()

    call_command("sync_slack", "--org", "acme", stdout=out)

    text = out.getvalue()
    assert "Syncing Slack for acme" in text
    assert "T0000001/#help: 50 messages (1 pages in this sync)" in text
    # Plain progress lines at most every 2 s (stdout is not a terminal), the first and last
    # always: the channel's first page, then the workspace done.
    assert re.search(r"^slack acme: 0/1 T0000001/#help: \d+ messages", text, flags=re.M)
    assert "slack acme: 1/1 T0000001: done" in text
    assert "120 new ticket(s)" in text
    assert Ticket.objects.count() == 120


def test_sync_slack_command_async_prints_the_task_id(
    organization, channel, django_capture_on_commit_callbacks
):
    out = StringIO()

    with django_capture_on_commit_callbacks() as published:
        call_command("sync_slack", "--org", "acme", "--async", stdout=out)

    uuid.UUID(out.getvalue().strip())
    assert len(published) == 1
    assert not Ticket.objects.exists()


def test_sync_slack_command_rejects_an_unknown_org(db):
    with pytest.raises(CommandError, match="nope"):
        call_command("sync_slack", "--org", "nope")


@pytest.fixture
def admin_browser(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("root", "root@acme.test", "pw")
    client.force_login(superuser)
    return client


def test_admin_pages_list_configuration_and_ledgers(
    admin_browser, organization, channel, slack_api
):
    slack_api.add_message(CHANNEL_ID, "ledger row")
    call_command("sync_slack", "--org", "acme", stdout=StringIO())
    SlackEventFactory(event_id="Ev1", team_id="T0000001", status="processed")

    for model in ("slackworkspace", "slackchannel", "slackmessage", "slackevent"):
        answer = admin_browser.get(f"/admin/integrations/{model}/")
        assert answer.status_code == 200, model
    row = SlackMessage.objects.get()
    assert (
        admin_browser.get(f"/admin/integrations/slackmessage/{row.pk}/change/").status_code == 200
    )


def test_admin_workspace_form_never_shows_the_token(admin_browser, organization, workspace):
    answer = admin_browser.get(f"/admin/integrations/slackworkspace/{workspace.pk}/change/")

    assert answer.status_code == 200
    html = answer.content.decode()
    assert workspace.bot_token not in html
    assert re.search(r'<input type="password" name="new_bot_token"', html)


def test_admin_adds_a_workspace_with_an_encrypted_token(
    admin_browser, organization, slack_settings, slack_api
):
    slack_api.add_workspace(token="xoxb-from-admin", team_id="T0000042")
    answer = admin_browser.post(
        "/admin/integrations/slackworkspace/add/",
        {
            "organization": organization.pk,
            "team_id": "T0000042",
            "name": "New",
            "new_bot_token": "xoxb-from-admin",
            "enabled": "on",
            "channels-TOTAL_FORMS": "0",
            "channels-INITIAL_FORMS": "0",
        },
    )

    assert answer.status_code == 302, answer.content.decode()[:2000]
    workspace = SlackWorkspace.objects.get(team_id="T0000042")
    assert workspace.bot_token == "xoxb-from-admin"
    assert (workspace.verified_team_id, workspace.verified) == ("T0000042", True)


def test_admin_sync_now_enqueues_and_says_so(
    admin_browser, organization, channel, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as published:
        answer = admin_browser.post(
            "/admin/integrations/slackchannel/",
            {"action": "sync_now", "_selected_action": [channel.pk]},
            follow=True,
        )

    assert answer.status_code == 200
    assert "Slack sync of acme enqueued" in answer.content.decode()
    assert len(published) == 1


def test_admin_resync_forgets_the_position(admin_browser, organization, channel):
    SlackChannel.objects.filter(pk=channel.pk).update(latest_ts="1700000000.000100")

    admin_browser.post(
        "/admin/integrations/slackchannel/",
        {"action": "resync_history", "_selected_action": [channel.pk]},
    )

    channel.refresh_from_db()
    assert channel.latest_ts == ""
