""" "Connect a Slack workspace" in Chromium: the admin button, Slack's consent page (the
local Slack server), and back to the admin with the workspace listed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Permission

from integrations.models import SlackWorkspace
from tests.integrations.slack.conftest import CALLBACK_PATH
from tests.support.browser import chromium_page
from tests.support.slack_server import (
    OAUTH_CLIENT_ID,
    OAUTH_CLIENT_SECRET,
    OAuthTeam,
    SlackOAuthServer,
)
from tickets.models import Organization, Role

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "slack-install-browser"
PASSWORD = "browser-pass-123"
TEAM = OAuthTeam(team_id="T0BROWSER", team="Browser Slack", rotation=True)


@pytest.fixture
def page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with chromium_page(monkeypatch, OUTPUT) as page:
        yield page


def test_staff_admin_connects_a_workspace_from_the_admin(
    live_server: Any,
    page: Any,
    make_user: Any,
    organization: Organization,
    other_organization: Organization,
    slack_oauth_api: SlackOAuthServer,
    settings: Any,
) -> None:
    settings.SLACK_API_URL = slack_oauth_api.url
    settings.SLACK_CLIENT_ID, settings.SLACK_CLIENT_SECRET = OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET
    settings.SLACK_OAUTH_BASE_URL = slack_oauth_api.authorize_url
    slack_oauth_api.redirect_url = f"{live_server.url}{CALLBACK_PATH}"
    slack_oauth_api.approve(TEAM)
    staff = make_user(organization=organization, role=Role.ADMIN, username="staffer", is_staff=True)
    staff.set_password(PASSWORD)
    staff.save()
    staff.user_permissions.add(*Permission.objects.filter(codename__endswith="slackworkspace"))
    make_user(organization=other_organization, role=Role.ADMIN, username="globex-admin")

    page.goto(f"{live_server.url}/admin/login/?next=/admin/integrations/slackworkspace/")
    page.fill("#id_username", "staffer")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.click("#connect-slack")
    options = page.locator("#id_organization option").all_inner_texts()
    assert any(organization.name in option for option in options)
    assert not any(other_organization.name in option for option in options)
    page.select_option("#id_organization", str(organization.pk))
    page.screenshot(path=str(OUTPUT / "01-choose-organization.png"), full_page=True)
    page.click("#add-to-slack")

    page.wait_for_selector(".messagelist")
    page.screenshot(path=str(OUTPUT / "02-connected.png"), full_page=True)
    assert "Slack workspace Browser Slack connected" in page.inner_text(".messagelist")
    assert "T0BROWSER" in page.inner_text("#result_list")
    workspace = SlackWorkspace.objects.get(team_id="T0BROWSER")
    assert workspace.organization == organization
    assert workspace.installed_by == staff
    assert workspace.bot_token in slack_oauth_api.tokens_of("T0BROWSER")
    assert workspace.bot_token_expires_at is not None
