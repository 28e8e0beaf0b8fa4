"""Probes and what they reveal: tasks/health is staff-only, odd ids are 404, Slack bodies stay
out of the logs."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.integrations.factories import SlackWorkspaceFactory
from tickets.models import Role
from zenith.logs import WithoutSlackBodies

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------------------
# tasks/health
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.ADMIN])
def test_health_is_refused_to_members_who_are_not_staff(
    make_user, make_api_client, organization, role
):
    member = make_user(organization=organization, role=role)
    response = make_api_client(member).get("/api/v1/tasks/health")
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"detail"}  # nothing of the report leaks into the refusal


def test_health_is_refused_to_anonymous_callers(client):
    assert client.get("/api/v1/tasks/health").status_code in (401, 403)


def test_health_answers_staff(make_user, make_api_client):
    staff = make_user(username="ops", is_staff=True)
    response = make_api_client(staff).get("/api/v1/tasks/health/")
    # 200 healthy or 503 not (no worker runs here): either way an answer, not a refusal.
    assert response.status_code in (200, 503)


# ------------------------------------------------------------------------------
# Odd ids are "not found", never a server error
# ------------------------------------------------------------------------------
@pytest.mark.parametrize("org_id", ["²", "١٢", "\U0001d7d9", "0x1", "-1"])
def test_non_ascii_digit_organization_ids_are_404(api_client, organization, org_id):
    response = api_client.get(f"/api/v1/tasks/organization/{org_id}")
    assert response.status_code == 404
    assert "detail" in response.json()


# ------------------------------------------------------------------------------
# Slack Bolt never writes request bodies to the logs
# ------------------------------------------------------------------------------
TEAM_ID = "TSECLOG01"


@pytest.fixture
def console_output() -> Iterator[io.StringIO]:
    """What the process's log handler (zenith/logs.py) writes, while the test runs."""
    handlers = [
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, WithoutSlackBodies) for f in h.filters)
    ]
    assert handlers, "the console handler of LOGGING carries the Slack filter"
    handler = handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    output = io.StringIO()
    previous = handler.setStream(output)
    try:
        yield output
    finally:
        handler.setStream(previous)


@pytest.fixture
def bolt_debug(settings: Any, organization: Any) -> Iterator[str]:
    """A fresh Bolt app (new signing secret) built while its logger is at DEBUG."""
    secret = uuid.uuid4().hex
    settings.SLACK_SIGNING_SECRET = secret
    SlackWorkspaceFactory(
        organization=organization,
        team_id=TEAM_ID,
        verified_team_id=TEAM_ID,  # events reach only a workspace proven to own its team
        name="Logs",
        bot_token="xoxb-logs",
        bot_user_id="UBOTSELF",
        bot_id="BBOTSELF",
    )
    bolt_logger = logging.getLogger("integrations.slack.bolt")
    level = bolt_logger.level
    bolt_logger.setLevel(logging.DEBUG)
    try:
        yield secret
    finally:
        bolt_logger.setLevel(level)


def post_signed(client: Any, secret: str, body: bytes, content_type: str) -> Any:
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    return client.generic(
        "POST",
        "/api/v1/integrations/slack/events",
        body,
        content_type=content_type,
        HTTP_X_SLACK_REQUEST_TIMESTAMP=stamp,
        HTTP_X_SLACK_SIGNATURE=f"v0={digest.hexdigest()}",
    )


def test_slack_request_bodies_never_reach_the_logs(client, bolt_debug, console_output):
    # A form submission Zenith has no listener for: Bolt warns "Unhandled request (...)"
    # and puts the submitted values into that line.
    dialog = {
        "type": "dialog_submission",
        "team": {"id": TEAM_ID, "domain": "logs"},
        "user": {"id": "UHUMAN01", "name": "dana"},
        "channel": {"id": "C0LOGS01", "name": "help"},
        "callback_id": "reset-form",
        "submission": {"new_password": "SECRET-DIALOG-hunter2"},
        "response_url": "https://hooks.slack.com/app/x",
        "state": "",
    }
    body = urlencode({"payload": json.dumps(dialog)}).encode()
    response = post_signed(client, bolt_debug, body, "application/x-www-form-urlencoded")
    assert response.status_code == 404  # Bolt: nothing handled it

    # Our own bot's message: Bolt skips it and, at DEBUG, logs the whole event.
    event = {
        "token": "legacy",
        "team_id": TEAM_ID,
        "api_app_id": "A0LOGS01",
        "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}",
        "event_time": int(time.time()),
        "event": {
            "type": "message",
            "channel": "C0LOGS01",
            "user": "UBOTSELF",
            "bot_id": "BBOTSELF",
            "text": "SECRET-MESSAGE-TEXT of a customer",
            "ts": "1700000999.000100",
        },
    }
    response = post_signed(client, bolt_debug, json.dumps(event).encode(), "application/json")
    assert response.status_code == 200

    logged = console_output.getvalue()
    assert "Unhandled request" in logged  # the line is kept: someone should know
    assert "request body withheld" in logged
    assert "SECRET-DIALOG" not in logged
    assert "SECRET-MESSAGE-TEXT" not in logged
    assert "UHUMAN01" not in logged
