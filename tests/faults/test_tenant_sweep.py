"""Every API route, called by an admin of one organization with another organization's ids.

The routes come from the URL configuration, so a new endpoint is swept automatically; a
route whose lookup kwarg the sweep cannot fill fails the test until someone teaches it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule

from mlmodels.models import ModelStatus
from taskops.models import TaskState
from tests.alerts.factories import AlertIncidentFactory, AlertRuleFactory
from tests.integrations.factories import (
    InboundEmailFactory,
    MailboxFactory,
    SlackChannelFactory,
    SlackWorkspaceFactory,
)
from tests.mlmodels.conftest import purge_queues
from tests.mlmodels.factories import ModelVersionFactory
from tests.taskops.factories import PeriodicTaskFactory, TaskRecordFactory
from tests.tickets.factories import TicketFactory
from tickets.models import Organization, Role

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PREFIX = "api/v1/"
SECRET = "globex-secret-7f3a"
SNAPSHOT_APPS = (
    "tickets",
    "taskops",
    "mlmodels",
    "integrations",
    "alerts",
    "django_celery_results",
    "django_celery_beat",
)
# Every field name a request body might use to point at another organization's objects.
FOREIGN_FIELDS = ("organization", "organization_id", "ticket_id", "ticket_ids", "workspace")
DENIED = {400, 401, 403, 404}
READS = {"get", "head", "options"}


def api_routes(
    patterns: list[Any] | None = None, prefix: str = ""
) -> Iterator[tuple[str, URLPattern]]:
    """(regex of the full path, pattern) for every route under /api/v1/."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        regex = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from api_routes(pattern.url_patterns, regex)
        elif regex.startswith(PREFIX):
            yield regex, pattern


def methods_of(pattern: URLPattern) -> list[str]:
    callback = pattern.callback
    actions = getattr(callback, "actions", None)
    if actions:
        return sorted(actions)
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is None:
        return ["get", "post"]
    methods = ("get", "head", "post", "put", "patch", "delete")
    return [m for m in methods if hasattr(view_class, m)]


def path_for(regex: str, fill: dict[str, str]) -> str:
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: fill[m.group(1)], regex)
    return "/" + path.replace("/?", "/").replace("?", "")


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of the project's tables (and task results), to compare before and after."""
    rows = {}
    for config in SNAPSHOT_APPS:
        for model in apps.get_app_config(config).get_models():
            rows[model._meta.label] = list(model.objects.order_by("pk").values())
    return rows


@pytest.fixture
def foreign(other_organization: Organization, make_user: Any) -> dict[str, Any]:
    """One of each kind of object in the other organization (globex)."""
    org = other_organization
    make_user(organization=org, role=Role.ADMIN, username="globex-admin")
    ticket = TicketFactory(organization=org, source="api", subject=SECRET, body=SECRET)
    version = ModelVersionFactory(
        organization=org, target="category", version=1, status=ModelStatus.TRAINING
    )
    workspace = SlackWorkspaceFactory(organization=org, team_id="TGLOBEX", name=SECRET)
    channel = SlackChannelFactory(workspace=workspace, channel_id="CGLOBEX", name=SECRET)
    mailbox = MailboxFactory(
        organization=org, name=SECRET, host="imap.globex.test", username=SECRET
    )
    inbound = InboundEmailFactory(
        organization=org,
        mailbox=mailbox,
        state="too_large",
        subject=SECRET,
        from_address="spy@globex.test",
        size=40 * 1024 * 1024,
    )
    now = timezone.now()
    record = TaskRecordFactory(
        name="taskops.tasks.noop",
        organization=org,
        kwargs={"organization_id": org.pk, "note": SECRET},
        state=TaskState.FAILURE,
        error=SECRET,
        queued_at=now,
        updated_at=now,
        finished_at=now,
    )
    rule = AlertRuleFactory(
        organization=org, name=SECRET, task_pattern="taskops.*", email_recipients=[SECRET]
    )
    incident = AlertIncidentFactory(rule=rule, summary=SECRET, opened_at=now)
    schedule = PeriodicTaskFactory(
        name=SECRET,
        task="integrations.tasks.process_email_tickets",
        kwargs=json.dumps({"organization_id": org.pk, "note": SECRET}),
        interval__every=5,
        interval__period=IntervalSchedule.MINUTES,
    )
    return {
        "schedule": schedule,
        "organization": org,
        "ticket": ticket,
        "rule": rule,
        "incident": incident,
        "version": version,
        "workspace": workspace,
        "channel": channel,
        "mailbox": mailbox,
        "inbound": inbound,
        "record": record,
    }


def test_another_organizations_ids_answer_404_on_every_route_and_change_nothing(
    organization, foreign, make_user, make_api_client, settings
):
    purge_queues()
    # The Slack events endpoint is Slack's, not a member's: with a secret it checks signatures.
    settings.SLACK_SIGNING_SECRET = "sweep-signing-secret"
    admin = make_user(organization=organization, role=Role.ADMIN, username="acme-admin")
    client = make_api_client(admin)
    # What a path parameter names: the resource before "/(?P<pk>...)", or the kwarg itself.
    by_resource = {
        "tickets": foreign["ticket"].pk,
        "tickets/review": foreign["ticket"].pk,
        "organizations": foreign["organization"].pk,
        "models": foreign["version"].pk,
        "integrations/slack/workspaces": foreign["workspace"].pk,
        "integrations/slack/channels": foreign["channel"].pk,
        "integrations/mailboxes": foreign["mailbox"].pk,
        "integrations/inbound-emails": foreign["inbound"].pk,
        "alerts/rules": foreign["rule"].pk,
        "alerts/incidents": foreign["incident"].pk,
        "schedules": foreign["schedule"].pk,
    }
    by_kwarg = {"task_id": foreign["record"].task_id, "org_id": foreign["organization"].pk}
    body = {
        "organization": foreign["organization"].pk,
        "organization_id": foreign["organization"].pk,
        "ticket_id": foreign["ticket"].pk,
        "ticket_ids": [foreign["ticket"].pk],
        "workspace": foreign["workspace"].pk,
        "name": "changed",
        "subject": "changed",
        "enabled": False,
        "category": "changed",
    }
    assert set(FOREIGN_FIELDS) <= set(body)

    before = snapshot()
    calls, failures = 0, []
    for regex, pattern in api_routes():
        kwargs = list(pattern.pattern.regex.groupindex)
        fill = {}
        for kwarg in kwargs:
            resource = regex[len(PREFIX) : regex.index("/(?P<")]
            if kwarg == "pk" and resource in by_resource:
                fill[kwarg] = str(by_resource[resource])
            elif kwarg in by_kwarg:
                fill[kwarg] = str(by_kwarg[kwarg])
            else:
                pytest.fail(f"the tenant sweep cannot fill {kwarg!r} in {regex}: teach it")
        path = path_for(regex, fill)
        for method in methods_of(pattern):
            response = getattr(client, method)(path, body, format="json")
            calls += 1
            text = response.content.decode(errors="replace")
            if kwargs and response.status_code not in {403, 404}:
                failures.append(f"{method.upper()} {path}: {response.status_code}")
            elif method not in READS and response.status_code not in DENIED:
                failures.append(f"{method.upper()} {path}: {response.status_code} {text[:200]}")
            if SECRET in text:
                failures.append(f"{method.upper()} {path}: shows the other organization's data")

    assert failures == []
    assert calls >= 35
    after = snapshot()
    changed = [label for label in before if before[label] != after[label]]
    assert changed == []
    assert after["taskops.TaskRecord"] == before["taskops.TaskRecord"]
    assert len(after["tickets.Ticket"]) == 1
    assert len(after["taskops.TaskRecord"]) == 1
    assert len(after["integrations.Mailbox"]) == 1
    purge_queues()
