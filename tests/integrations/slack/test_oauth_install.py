""" "Add to Slack" over HTTP: install -> Slack's consent page (local server) -> callback.

The workspace comes from Slack's answer to oauth.v2.access; a second organization can
neither start an install for the first one nor take over its team; states are bound to
their user, used once and expire.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from integrations.models import SlackOAuthState, SlackWorkspace
from tests.integrations.slack.conftest import (
    INSTALL_PATH,
    consent,
    install_over_http,
    local_path,
)
from tests.support.slack_server import (
    OAUTH_APP_ID,
    OAUTH_CLIENT_ID,
    OAuthTeam,
    SlackOAuthServer,
)
from tickets.models import Organization, Role

TEAM = OAuthTeam(team_id="T0INITECH", team="Initech Support", bot_user_id="UBOTINI", bot_id="BINI")


@pytest.fixture
def slack_api(slack_oauth_api: SlackOAuthServer) -> SlackOAuthServer:
    slack_oauth_api.approve(TEAM)
    return slack_oauth_api


@pytest.fixture
def admin_client(make_user: Any, organization: Organization, oauth_settings: Any) -> Client:
    client = Client()
    client.force_login(make_user(organization=organization, role=Role.ADMIN, username="ada"))
    return client


@pytest.fixture
def other_admin_client(
    make_user: Any, other_organization: Organization, oauth_settings: Any
) -> Client:
    client = Client()
    client.force_login(make_user(organization=other_organization, role=Role.ADMIN, username="gus"))
    return client


def test_install_creates_the_workspace_from_slacks_answer(
    admin_client: Client, organization: Organization, slack_api: SlackOAuthServer
) -> None:
    started = admin_client.get(f"{INSTALL_PATH}?organization={organization.pk}")

    assert started.status_code == 302
    authorize = urlsplit(started["Location"])
    assert started["Location"].startswith(slack_api.authorize_url)
    query = parse_qs(authorize.query)
    assert query["client_id"] == [OAUTH_CLIENT_ID]
    assert "channels:history" in query["scope"][0].split(",")
    state = SlackOAuthState.objects.get()
    assert query["state"] == [state.state]
    assert (state.organization, state.user.username) == (organization, "ada")

    done = admin_client.get(local_path(consent(started["Location"])))

    assert done.status_code == 200, done.content
    assert b"Initech Support" in done.content
    workspace = SlackWorkspace.objects.get()
    issued = slack_api.tokens_of(TEAM.team_id)
    assert workspace.organization == organization
    assert (workspace.team_id, workspace.name) == ("T0INITECH", "Initech Support")
    assert (workspace.bot_user_id, workspace.bot_id) == ("UBOTINI", "BINI")
    assert workspace.bot_token == issued[0]
    assert workspace.app_id == OAUTH_APP_ID
    assert "channels:history" in workspace.scopes
    assert workspace.installed_via_oauth
    assert workspace.installed_by.username == "ada"
    assert workspace.enabled
    assert workspace.bot_token_expires_at is None
    # Encrypted at rest: the token is not in the row as stored.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT bot_token FROM integrations_slackworkspace")
        assert issued[0] not in cursor.fetchone()[0]
    # The API shows the install without the token.
    listed = admin_client.get("/api/v1/integrations/slack/workspaces/").json()["results"]
    assert listed[0]["installed_via_oauth"] is True
    assert "bot_token" not in listed[0]


def test_the_callback_answers_json_when_asked(
    admin_client: Client, organization: Organization
) -> None:
    done = install_over_http(admin_client, organization, HTTP_ACCEPT="application/json")

    assert done.status_code == 200
    assert done.json()["team_id"] == "T0INITECH"
    assert "connected" in done.json()["detail"]


@pytest.mark.parametrize(
    ("query", "status"),
    [("", 400), ("?organization=", 400), ("?organization=abc", 400), ("?organization=-1", 400)],
)
def test_install_without_a_valid_organization_is_400_naming_it(
    admin_client: Client, query: str, status: int
) -> None:
    answer = admin_client.get(f"{INSTALL_PATH}{query}")

    assert answer.status_code == status
    assert "organization" in answer.json()
    assert not SlackOAuthState.objects.exists()


def test_another_organization_cannot_start_an_install_for_mine(
    other_admin_client: Client, organization: Organization
) -> None:
    answer = other_admin_client.get(f"{INSTALL_PATH}?organization={organization.pk}")

    assert answer.status_code == 404
    assert not SlackOAuthState.objects.exists()


def test_an_operator_may_not_install_and_anonymous_must_log_in(
    make_user: Any, organization: Organization, oauth_settings: Any
) -> None:
    operator = Client()
    operator.force_login(make_user(organization=organization, role=Role.OPERATOR))
    assert operator.get(f"{INSTALL_PATH}?organization={organization.pk}").status_code == 403
    anonymous = Client().get(f"{INSTALL_PATH}?organization={organization.pk}")
    assert anonymous.status_code in (401, 403)
    assert Client().get("/api/v1/integrations/slack/oauth/callback?code=x&state=y").status_code in (
        401,
        403,
    )
    assert not SlackOAuthState.objects.exists()


def test_a_team_installed_by_another_organization_cannot_be_hijacked(
    admin_client: Client,
    other_admin_client: Client,
    organization: Organization,
    other_organization: Organization,
) -> None:
    assert install_over_http(admin_client, organization).status_code == 200
    before = SlackWorkspace.objects.get()

    html = install_over_http(other_admin_client, other_organization)
    as_json = install_over_http(
        other_admin_client, other_organization, HTTP_ACCEPT="application/json"
    )

    assert html.status_code == 409
    assert b"already connected to another organization" in html.content
    assert as_json.status_code == 409
    assert "another organization" in as_json.json()["detail"]
    after = SlackWorkspace.objects.get()
    assert after.organization == organization
    assert after.bot_token == before.bot_token


def test_a_state_started_by_another_user_is_refused(
    admin_client: Client, other_admin_client: Client, organization: Organization
) -> None:
    started = admin_client.get(f"{INSTALL_PATH}?organization={organization.pk}")
    callback = local_path(consent(started["Location"]))

    stolen = other_admin_client.get(callback)

    assert stolen.status_code == 403
    assert b"started by someone else" in stolen.content
    assert not SlackWorkspace.objects.exists()
    # The state is still the rightful user's: the install completes for them.
    assert admin_client.get(callback).status_code == 200
    assert SlackWorkspace.objects.get().organization == organization


def test_a_state_works_once_and_for_ten_minutes(
    admin_client: Client, organization: Organization
) -> None:
    started = admin_client.get(f"{INSTALL_PATH}?organization={organization.pk}")
    callback = local_path(consent(started["Location"]))
    assert admin_client.get(callback).status_code == 200

    replay = admin_client.get(callback)

    assert replay.status_code == 400
    assert b"already used or has expired" in replay.content

    late = admin_client.get(f"{INSTALL_PATH}?organization={organization.pk}")
    late_callback = local_path(consent(late["Location"]))
    SlackOAuthState.objects.filter(consumed_at__isnull=True).update(
        created_at=timezone.now() - timedelta(minutes=11)
    )
    expired = admin_client.get(late_callback, HTTP_ACCEPT="application/json")
    assert expired.status_code == 400
    assert "expired" in expired.json()["detail"]
    forged = admin_client.get(f"{local_path(late_callback).split('?')[0]}?code=x&state=forged")
    assert forged.status_code == 400


def test_denied_consent_connects_nothing(
    admin_client: Client, organization: Organization, slack_api: SlackOAuthServer
) -> None:
    slack_api.consent = False

    answer = install_over_http(admin_client, organization)

    assert answer.status_code == 400
    assert b"cancelled in Slack" in answer.content
    assert not SlackWorkspace.objects.exists()


def test_without_client_credentials_the_install_is_unavailable(
    admin_client: Client, organization: Organization, settings: Any
) -> None:
    settings.SLACK_CLIENT_SECRET = ""

    answer = admin_client.get(f"{INSTALL_PATH}?organization={organization.pk}")

    assert answer.status_code == 503
    assert "SLACK_CLIENT_SECRET" in answer.json()["detail"]


def test_the_admin_button_leads_to_the_install_of_an_administered_organization(
    make_user: Any,
    organization: Organization,
    other_organization: Organization,
    oauth_settings: Any,
) -> None:
    staff = make_user(organization=organization, role=Role.ADMIN, is_staff=True, username="st")
    make_user(organization=other_organization, role=Role.ADMIN, username="gus")
    client = Client()
    client.force_login(staff)
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(*Permission.objects.filter(codename__endswith="slackworkspace"))

    changelist = client.get("/admin/integrations/slackworkspace/")
    assert changelist.status_code == 200
    assert b"Connect a Slack workspace" in changelist.content
    page = client.get("/admin/integrations/slackworkspace/connect/")
    assert page.status_code == 200
    assert organization.name.encode() in page.content
    assert other_organization.name.encode() not in page.content

    refused = client.post(
        "/admin/integrations/slackworkspace/connect/", {"organization": other_organization.pk}
    )
    assert refused.status_code == 200
    assert b"Select a valid choice" in refused.content
    chosen = client.post(
        "/admin/integrations/slackworkspace/connect/", {"organization": organization.pk}
    )
    assert chosen.status_code == 302
    assert chosen["Location"] == f"{INSTALL_PATH}?organization={organization.pk}&from=admin"

    started = client.get(chosen["Location"])
    done = client.get(local_path(consent(started["Location"])))
    assert done.status_code == 302
    assert done["Location"] == "/admin/integrations/slackworkspace/"
    listed = client.get(done["Location"])
    assert b"Slack workspace Initech Support connected" in listed.content
    assert b"T0INITECH" in listed.content


@pytest.mark.parametrize(
    "query",
    [
        f"state={'s' * 100_000}&code={'c' * 100_000}",
        "state=%00%FF%FE&code=%C0%AF",
        "state=a&state=b&code=c&code=d",
        f"error=%3Cscript%3E{'e' * 100_000}&state=s",
    ],
    ids=["oversized", "nul-and-invalid-utf8", "repeated", "oversized-error"],
)
def test_a_forged_callback_is_refused_without_echoing_it_and_writes_nothing(
    admin_client: Client, organization: Organization, query: str, caplog: Any
) -> None:
    answer = admin_client.get(f"/api/v1/integrations/slack/oauth/callback?{query}")

    assert answer.status_code in (400, 403), answer.status_code
    # Neither the page nor the log repeats the forged values.
    assert len(answer.content) < 2_000
    assert "<script" not in answer.content.decode()
    ours = [r for r in caplog.records if r.name.startswith("integrations")]
    assert all(len(record.getMessage()) < 2_000 for record in ours)
    assert not SlackWorkspace.objects.exists()
    assert not SlackOAuthState.objects.filter(consumed_at__isnull=False).exists()
