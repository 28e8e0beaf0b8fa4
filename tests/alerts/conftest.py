"""Fixtures of the alerts tests: a clean broker, people with roles, Slack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from integrations.models import SlackWorkspace
from tests.integrations.factories import SlackWorkspaceFactory
from tests.mlmodels.conftest import purge_queues
from tests.support.slack_server import DEFAULT_TEAM_ID, DEFAULT_TOKEN, SlackApiServer
from tickets.models import Organization, Role


@pytest.fixture(autouse=True)
def _empty_queues() -> Iterator[None]:
    """Each test's worker sees only that test's tasks, and leaves none of them behind."""
    purge_queues()
    yield
    purge_queues()


@pytest.fixture
def admin(make_user: Callable[..., Any], organization: Organization) -> Any:
    return make_user(organization=organization, role=Role.ADMIN, username="ada")


@pytest.fixture
def viewer(make_user: Callable[..., Any], organization: Organization) -> Any:
    return make_user(organization=organization, role=Role.VIEWER, username="victor")


@pytest.fixture
def slack_workspace(
    organization: Organization, settings: Any, slack_api: SlackApiServer
) -> SlackWorkspace:
    """The organization's workspace, on the local Slack Web API server."""
    settings.SLACK_API_URL = slack_api.url
    return SlackWorkspaceFactory(
        organization=organization, team_id=DEFAULT_TEAM_ID, name="Acme", bot_token=DEFAULT_TOKEN
    )


@pytest.fixture
def fast_retries(settings: Any) -> None:
    settings.ZENITH_RETRY_DELAYS = [1, 1, 1]
