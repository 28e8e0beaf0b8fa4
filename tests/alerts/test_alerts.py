"""Alerts: rules fire once per burst and recover once, to Slack and e-mail, and survive outages.

The end-to-end tests run real failing tasks, the evaluation and the deliveries on a worker
thread consuming the real broker, post to the local Slack Web API server, and send mail
through Django's locmem backend (the worker shares the test's process, so `mailoutbox`).
"""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from alerts import services as alerts
from alerts.models import (
    AlertDelivery,
    AlertDeliveryState,
    AlertIncident,
    AlertIncidentState,
    AlertRule,
    AlertRuleKind,
)
from integrations.models import Mailbox, SlackWorkspace
from taskops import services
from taskops.models import TaskRecord, TaskState
from tests.integrations.factories import MailboxFactory
from tests.support.slack_server import DEFAULT_TOKEN
from tests.taskops.factories import TaskRecordFactory
from tests.taskops.helpers import wait_for, wait_for_state
from tickets.models import Organization, Role
from zenith.celery import app

EVALUATE = "taskops.tasks.evaluate_alert_rules"
DELIVER = "taskops.tasks.deliver_alert"
ALERT_CHANNEL = "C0ALERTS"
RULES_URL = "/api/v1/alerts/rules/"
INCIDENTS_URL = "/api/v1/alerts/incidents/"


# ------------------------------------------------------------------------------
# Fixtures and helpers
# ------------------------------------------------------------------------------
def make_rule(organization: Organization, **fields: Any) -> AlertRule:
    fields.setdefault("name", "Diagnostics failing")
    fields.setdefault("task_pattern", "taskops.tasks.diagnostic_*")
    fields.setdefault("threshold", 3)
    fields.setdefault("window_minutes", 15)
    return alerts.alert_rule_create(organization=organization, **fields)


def fail_tasks_on_worker(organization: Organization, count: int) -> list[str]:
    """Run `count` tasks of the organization that fail for good; wait for their FAILURE."""
    task_ids = [
        services.task_enqueue(
            name="taskops.tasks.diagnostic_fail",
            kwargs={"permanent": True, "organization_id": organization.pk},
            organization_id=organization.pk,
        )
        for _ in range(count)
    ]
    for task_id in task_ids:
        assert wait_for_state(task_id, TaskState.FAILURE, TaskState.SUCCESS).state == "FAILURE"
    return task_ids


def evaluate_on_worker() -> dict[str, int]:
    """Run the periodic evaluation as beat would, and wait for its deliveries to settle."""
    record = wait_for_state(services.task_enqueue(name=EVALUATE, kwargs={}), "SUCCESS", "FAILURE")
    assert record.state == "SUCCESS", record.error
    wait_for(
        lambda: (
            not AlertDelivery.objects.filter(
                state__in=[
                    AlertDeliveryState.PENDING,
                    AlertDeliveryState.SENDING,
                    AlertDeliveryState.RETRYING,
                ]
            ).exists()
        ),
        what="every alert delivery sent or failed",
    )
    outcome: dict[str, int] = record.result or {}
    return outcome


def age(task_ids: list[str], minutes: int) -> None:
    """Move these tasks' failures `minutes` into the past."""
    shift = timedelta(minutes=minutes)
    TaskRecord.objects.filter(task_id__in=task_ids).update(
        finished_at=F("finished_at") - shift, updated_at=F("updated_at") - shift
    )


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/"


# ------------------------------------------------------------------------------
# End to end: real tasks, the evaluation task, Slack and e-mail
# ------------------------------------------------------------------------------
def test_a_burst_of_failures_alerts_once_and_recovers_once_on_slack_and_email(
    inthread_worker, organization, other_organization, slack_workspace, slack_api, mailoutbox
):
    rule = make_rule(
        organization,
        slack_channel=ALERT_CHANNEL,
        email_recipients=["ops@acme.test", "oncall@acme.test"],
    )
    # Not counted: another organization's failures, and two of ours (one short of 3).
    fail_tasks_on_worker(other_organization, 3)
    first = fail_tasks_on_worker(organization, 2)
    evaluate_on_worker()
    assert not AlertIncident.objects.exists()
    assert slack_api.posted == []
    assert mailoutbox == []

    burst = first + fail_tasks_on_worker(organization, 1)
    evaluate_on_worker()

    incident = AlertIncident.objects.get()
    assert (incident.rule, incident.state, incident.count) == (rule, "open", 3)
    assert incident.details["tasks"] == {"taskops.tasks.diagnostic_fail": 3}
    [fired] = slack_api.posted
    assert fired["channel"] == ALERT_CHANNEL
    assert fired["token"] == DEFAULT_TOKEN
    assert 'Alert "Diagnostics failing" fired' in fired["text"]
    assert "3 failures of taskops.tasks.diagnostic_* in the last 15 minutes" in fired["text"]
    assert "taskops.tasks.diagnostic_fail: 3" in fired["text"]
    assert "diagnostic permanent failure" in fired["text"]
    [mail] = mailoutbox
    assert mail.subject == "[Zenith] FIRING: Diagnostics failing (Acme)"
    assert mail.to == ["ops@acme.test", "oncall@acme.test"]
    assert mail.body == fired["text"]

    # Still failing (even one more): no second message, the same incident.
    burst += fail_tasks_on_worker(organization, 1)
    evaluate_on_worker()
    evaluate_on_worker()
    assert AlertIncident.objects.get().state == "open"
    assert len(slack_api.posted) == 1
    assert len(mailoutbox) == 1

    # The failures fall out of the 15-minute window: recovered, once.
    age(burst, minutes=16)
    evaluate_on_worker()
    evaluate_on_worker()

    incident.refresh_from_db()
    assert (incident.state, incident.resolution) == ("resolved", "recovered")
    assert [p["text"].splitlines()[0] for p in slack_api.posted] == [
        "[Zenith] FIRING: Diagnostics failing (Acme)",
        "[Zenith] RECOVERED: Diagnostics failing (Acme)",
    ]
    recovered = slack_api.posted[1]["text"]
    assert (
        'Alert "Diagnostics failing" recovered: now 0 failures of taskops.tasks.diagnostic_* '
        "in the last 15 minutes (threshold 3)." in recovered
    )
    assert "It fired at " in recovered
    assert [m.subject for m in mailoutbox] == [
        "[Zenith] FIRING: Diagnostics failing (Acme)",
        "[Zenith] RECOVERED: Diagnostics failing (Acme)",
    ]
    deliveries = AlertDelivery.objects.filter(incident=incident)
    assert sorted(deliveries.values_list("channel", "kind", "state", "attempts")) == [
        ("email", "fired", "sent", 1),
        ("email", "recovered", "sent", 1),
        ("slack", "fired", "sent", 1),
        ("slack", "recovered", "sent", 1),
    ]
    assert all(d.sent_at is not None and d.error == "" for d in deliveries)
    # Each delivery ran as its own task in the ledger, under the organization.
    assert (
        TaskRecord.objects.filter(name=DELIVER, organization=organization, state="SUCCESS").count()
        == 4
    )

    # A redelivered send task finds the message sent and sends nothing.
    alerts.alert_deliver(delivery_id=deliveries.first().pk)
    assert len(slack_api.posted) == 2
    assert len(mailoutbox) == 2

    # The next burst is a new incident.
    fail_tasks_on_worker(organization, 3)
    evaluate_on_worker()
    assert AlertIncident.objects.filter(state="open").exclude(pk=incident.pk).count() == 1
    assert len(slack_api.posted) == 3
    assert len(mailoutbox) == 3


def test_a_failing_slack_delivery_is_recorded_and_retried_until_it_is_sent(
    inthread_worker, organization, slack_workspace, slack_api, mailoutbox, fast_retries
):
    make_rule(organization, threshold=2, slack_channel=ALERT_CHANNEL, email_recipients=["o@a.io"])
    fail_tasks_on_worker(organization, 2)
    slack_api.fail_next(status=500, count=2, method="chat.postMessage")

    evaluate_on_worker()

    slack = AlertDelivery.objects.get(channel="slack")
    assert (slack.state, slack.attempts) == ("sent", 3)
    assert "internal_error" in slack.error
    assert "HTTP 500" in slack.error
    assert len(slack_api.posted) == 1
    assert slack_api.call_count("chat.postMessage") == 3
    task_id = TaskRecord.objects.get(name=DELIVER, kwargs={"delivery_id": slack.pk}).task_id
    record = wait_for_state(task_id, TaskState.SUCCESS, TaskState.FAILURE)
    assert (record.state, record.retries, len(record.attempts)) == ("SUCCESS", 2, 2)
    # The e-mail of the same incident did not wait for Slack.
    email = AlertDelivery.objects.get(channel="email")
    assert (email.state, email.attempts) == ("sent", 1)
    assert len(mailoutbox) == 1


def test_an_unreachable_slack_fails_its_delivery_not_the_evaluation_of_other_rules(
    inthread_worker, organization, slack_workspace, mailoutbox, fast_retries, settings
):
    settings.SLACK_API_URL = closed_port_url()
    # A rule this version cannot evaluate (first in line) does not stop the others.
    broken = make_rule(organization, name="From the future", email_recipients=["x@a.io"])
    AlertRule.objects.filter(pk=broken.pk).update(kind="from_the_future")
    slack_rule = make_rule(organization, name="To Slack", threshold=1, slack_channel="#ops")
    mail_rule = make_rule(organization, name="To e-mail", threshold=1, email_recipients=["o@a.io"])
    fail_tasks_on_worker(organization, 1)

    outcome = evaluate_on_worker()

    assert outcome["fired"] == 2
    assert outcome["error"] == 1
    assert set(AlertIncident.objects.values_list("rule", flat=True)) == {
        slack_rule.pk,
        mail_rule.pk,
    }
    slack = AlertDelivery.objects.get(incident__rule=slack_rule)
    assert (slack.channel, slack.target, slack.state, slack.attempts) == (
        "slack",
        "#ops",
        "failed",
        4,
    )
    assert "network_error" in slack.error
    assert slack.sent_at is None
    # The delivery row says "failed" from inside the last attempt; the ledger's FAILURE
    # is written just after it.
    task_id = TaskRecord.objects.get(name=DELIVER, kwargs={"delivery_id": slack.pk}).task_id
    record = wait_for_state(task_id, TaskState.FAILURE, TaskState.SUCCESS)
    assert (record.state, record.retries) == ("FAILURE", 3)
    assert AlertDelivery.objects.get(incident__rule=mail_rule).state == "sent"
    assert [m.subject for m in mailoutbox] == ["[Zenith] FIRING: To e-mail (Acme)"]
    assert AlertRule.objects.get(pk=slack_rule.pk).last_evaluated_at is not None


# ------------------------------------------------------------------------------
# Conditions (services, no worker)
# ------------------------------------------------------------------------------
def test_only_matching_failures_of_the_organization_within_the_window_count(
    db, organization, other_organization
):
    rule = make_rule(organization, task_pattern="integrations.tasks.*", email_recipients=["o@a.io"])
    now = timezone.now()

    def failed(name: str, minutes_ago: float, org: Organization = organization) -> None:
        finished = now - timedelta(minutes=minutes_ago)
        TaskRecordFactory(
            name=name,
            organization=org,
            state=TaskState.FAILURE,
            queued_at=finished - timedelta(seconds=5),
            finished_at=finished,
            updated_at=finished,
        )

    failed("integrations.tasks.sync_slack_tickets", 1)
    failed("integrations.tasks.process_email_tickets", 14)
    failed("integrations.tasks.sync_slack_tickets", 16)  # out of the window
    failed("mlmodels.tasks.train_all_organizations_task", 1)  # another pattern
    failed("integrations.tasks.sync_slack_tickets", 1, other_organization)
    TaskRecordFactory(
        name="integrations.tasks.manual_sync_trigger",
        organization=organization,
        state=TaskState.SUCCESS,
    )

    assert alerts.alert_rule_evaluate(rule=rule, now=now) == "quiet"
    failed("integrations.tasks.manual_sync_trigger", 0)
    assert alerts.alert_rule_evaluate(rule=rule, now=now) == "fired"
    assert alerts.alert_rule_evaluate(rule=rule, now=now) == "ongoing"
    incident = AlertIncident.objects.get()
    assert incident.details["tasks"] == {
        "integrations.tasks.sync_slack_tickets": 1,
        "integrations.tasks.process_email_tickets": 1,
        "integrations.tasks.manual_sync_trigger": 1,
    }
    # Two minutes on, the 14-minute-old failure is out: 2 of 3, recovered.
    assert alerts.alert_rule_evaluate(rule=rule, now=now + timedelta(minutes=2)) == "recovered"
    assert AlertIncident.objects.get().state == AlertIncidentState.RESOLVED
    assert AlertDelivery.objects.filter(kind="recovered").count() == 1


def test_a_mailbox_in_error_for_longer_than_the_window_fires_and_recovers(
    db, organization, slack_workspace, mailoutbox
):
    now = timezone.now()
    broken = MailboxFactory(
        organization=organization,
        name="Support",
        host="imap.acme.test",
        username="support",
        last_error="LOGIN failed: authentication failed",
        last_error_kind="auth",
        last_error_at=now - timedelta(minutes=1),
        last_success_at=now - timedelta(minutes=45),
    )
    # In error for 10 minutes only, disabled, and a Slack workspace: none of them count.
    MailboxFactory(
        organization=organization,
        name="Sales",
        host="imap.acme.test",
        username="sales",
        last_error="timed out",
        last_error_kind="transient",
        last_success_at=now - timedelta(minutes=10),
    )
    MailboxFactory(
        organization=organization,
        name="Old",
        host="imap.acme.test",
        username="old",
        enabled=False,
        last_error="gone",
        last_success_at=now - timedelta(days=3),
    )
    SlackWorkspace.objects.filter(pk=slack_workspace.pk).update(
        last_error="invalid_auth", created_at=now - timedelta(hours=2)
    )
    rule = alerts.alert_rule_create(
        organization=organization,
        name="Mailbox down",
        kind=AlertRuleKind.INTEGRATION_ERROR,
        integration="mailbox",
        window_minutes=30,
        email_recipients=["ops@acme.test"],
    )

    assert alerts.alert_rule_evaluate(rule=rule, now=now) == "fired"

    incident = AlertIncident.objects.get()
    assert [i["name"] for i in incident.details["integrations"]] == ["Support"]
    delivery = AlertDelivery.objects.get()
    alerts.alert_deliver(delivery_id=delivery.pk)
    [mail] = mailoutbox
    assert mail.subject == "[Zenith] FIRING: Mailbox down (Acme)"
    assert "1 integration in error for over 30 minutes" in mail.body
    assert 'mailbox "Support" (auth) in error since' in mail.body
    assert "LOGIN failed" in mail.body
    assert "Sales" not in mail.body
    assert "Old" not in mail.body

    # Fixed: recovered. The workspace (never synced: in error since its creation) counts
    # once the rule watches any integration.
    Mailbox.objects.filter(pk=broken.pk).update(last_error="", last_success_at=now)
    assert alerts.alert_rule_evaluate(rule=rule, now=now) == "recovered"
    alerts.alert_deliver(delivery_id=AlertDelivery.objects.get(kind="recovered").pk)
    assert mailoutbox[1].subject == "[Zenith] RECOVERED: Mailbox down (Acme)"
    assert "0 integrations in error for over 30 minutes" in mailoutbox[1].body

    alerts.alert_rule_update(rule=rule, data={"integration": "any"})
    assert alerts.alert_rule_evaluate(rule=rule, now=now) == "fired"
    newest = AlertIncident.objects.filter(state="open").get()
    assert [i["kind"] for i in newest.details["integrations"]] == ["slack_workspace"]


def test_disabling_a_rule_closes_its_incident_without_a_message(db, organization):
    rule = make_rule(organization, threshold=1, email_recipients=["o@a.io"])
    TaskRecordFactory(
        name="taskops.tasks.diagnostic_fail", organization=organization, state=TaskState.FAILURE
    )
    assert alerts.alert_rule_evaluate(rule=rule) == "fired"

    alerts.alert_rule_update(rule=rule, data={"enabled": False})

    incident = AlertIncident.objects.get()
    assert (incident.state, incident.resolution) == ("resolved", "rule disabled")
    assert AlertDelivery.objects.count() == 1
    assert alerts.alert_rule_evaluate(rule=rule) == "disabled"


def test_evaluation_is_scheduled_every_minute_and_routed_to_default(db):
    call_command("setup_periodic_tasks")
    call_command("setup_periodic_tasks")

    schedule = PeriodicTask.objects.get(task=EVALUATE)
    assert schedule.interval.schedule.run_every == timedelta(minutes=1)
    assert schedule.enabled
    assert PeriodicTask.objects.filter(task=EVALUATE).count() == 1
    app.loader.import_default_modules()
    for name in (EVALUATE, DELIVER):
        assert app.tasks[name].acks_late is True
        assert app.amqp.router.route({}, name)["queue"].name == "default"


# ------------------------------------------------------------------------------
# API
# ------------------------------------------------------------------------------
def rule_body(organization: Organization, **fields: Any) -> dict[str, Any]:
    return {
        "organization": organization.pk,
        "name": "Sync failing",
        "kind": "task_failures",
        "task_pattern": "integrations.tasks.*",
        "threshold": 3,
        "window_minutes": 15,
        "email_recipients": ["ops@acme.test"],
        **fields,
    }


def test_an_admin_creates_changes_and_deletes_a_rule(
    db, organization, admin, make_api_client, slack_workspace
):
    api = make_api_client(admin)

    created = api.post(RULES_URL, rule_body(organization, slack_channel="#ops"), format="json")

    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["organization_slug"] == "acme"
    assert (body["task_pattern"], body["threshold"], body["window_minutes"]) == (
        "integrations.tasks.*",
        3,
        15,
    )
    assert (body["slack_channel"], body["open_incident"], body["enabled"]) == ("#ops", None, True)
    url = f"{RULES_URL}{body['id']}"
    changed = api.patch(url, {"threshold": 5, "enabled": False}, format="json")
    assert changed.status_code == 200
    assert (changed.json()["threshold"], changed.json()["enabled"]) == (5, False)
    assert api.get(RULES_URL).json()["results"][0]["threshold"] == 5
    assert api.delete(url).status_code == 204
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"task_pattern": "integrations tasks"}, "task_pattern"),
        ({"task_pattern": "integrations.tasks.[ab"}, "task_pattern"),
        ({"task_pattern": ""}, "task_pattern"),
        ({"window_minutes": 0}, "window_minutes"),
        ({"window_minutes": 60 * 24 * 365}, "window_minutes"),
        ({"window_minutes": "soon"}, "window_minutes"),
        ({"threshold": 0}, "threshold"),
        ({"kind": "cpu"}, "kind"),
        ({"email_recipients": ["not-an-address"]}, "email_recipients"),
        ({"email_recipients": [], "slack_channel": ""}, "slack_channel"),
        ({"slack_channel": "#ops"}, "slack_channel"),  # the organization has no workspace
        ({"slack_channel": "two words"}, "slack_channel"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_rules_answer_400_naming_the_field(
    db, organization, admin, make_api_client, fields, field
):
    response = make_api_client(admin).post(
        RULES_URL, rule_body(organization, **fields), format="json"
    )

    assert response.status_code == 400
    assert field in response.json(), response.json()
    assert not AlertRule.objects.exists()


def test_a_second_rule_with_the_same_name_and_a_bad_patch_answer_400(
    db, organization, admin, make_api_client
):
    api = make_api_client(admin)
    rule_id = api.post(RULES_URL, rule_body(organization), format="json").json()["id"]

    again = api.post(RULES_URL, rule_body(organization), format="json")
    bad_patch = api.patch(f"{RULES_URL}{rule_id}", {"task_pattern": "a b"}, format="json")
    moved = api.patch(f"{RULES_URL}{rule_id}", {"organization": 1}, format="json")

    assert (again.status_code, list(again.json())) == (400, ["detail", "name"])
    assert (bad_patch.status_code, list(bad_patch.json())) == (400, ["detail", "task_pattern"])
    assert (moved.status_code, list(moved.json())) == (400, ["detail", "organization"])
    assert AlertRule.objects.get().task_pattern == "integrations.tasks.*"


def test_viewers_read_rules_and_incidents_but_cannot_change_rules(
    db, organization, viewer, make_api_client
):
    rule = make_rule(organization, threshold=1, email_recipients=["o@a.io"])
    TaskRecordFactory(
        name="taskops.tasks.diagnostic_fail", organization=organization, state=TaskState.FAILURE
    )
    alerts.alert_rule_evaluate(rule=rule)
    api = make_api_client(viewer)

    created = api.post(RULES_URL, rule_body(organization, name="Mine"), format="json")
    patched = api.patch(f"{RULES_URL}{rule.pk}", {"threshold": 9}, format="json")
    deleted = api.delete(f"{RULES_URL}{rule.pk}")
    rules = api.get(RULES_URL)
    incidents = api.get(INCIDENTS_URL, {"state": "open"})

    assert (created.status_code, patched.status_code, deleted.status_code) == (403, 403, 403)
    assert AlertRule.objects.get().threshold == 1
    assert [r["open_incident"] for r in rules.json()["results"]] == [AlertIncident.objects.get().pk]
    [incident] = incidents.json()["results"]
    assert (incident["rule_name"], incident["state"], incident["count"]) == (
        "Diagnostics failing",
        "open",
        1,
    )
    [delivery] = incident["deliveries"]
    assert (delivery["channel"], delivery["kind"], delivery["target"], delivery["state"]) == (
        "email",
        "fired",
        "o@a.io",
        "pending",
    )
    assert delivery["attempts"] == 0
    assert delivery["sent_at"] is None
    assert api.get(INCIDENTS_URL, {"state": "resolved"}).json()["results"] == []
    assert api.get(INCIDENTS_URL, {"state": "bogus"}).status_code == 400


def test_another_organizations_rules_and_incidents_answer_404(
    db, organization, other_organization, make_user, make_api_client
):
    theirs = make_rule(other_organization, threshold=1, email_recipients=["o@globex.test"])
    TaskRecordFactory(
        name="taskops.tasks.diagnostic_fail",
        organization=other_organization,
        state=TaskState.FAILURE,
    )
    alerts.alert_rule_evaluate(rule=theirs)
    incident = AlertIncident.objects.get()
    api = make_api_client(make_user(organization=organization, role=Role.ADMIN, username="ada"))

    assert api.get(f"{RULES_URL}{theirs.pk}").status_code == 404
    assert api.patch(f"{RULES_URL}{theirs.pk}", {"threshold": 9}, format="json").status_code == 404
    assert api.delete(f"{RULES_URL}{theirs.pk}").status_code == 404
    assert api.get(f"{INCIDENTS_URL}{incident.pk}").status_code == 404
    assert api.get(RULES_URL).json()["results"] == []
    assert api.get(INCIDENTS_URL).json()["results"] == []
    by_their_rule = api.get(INCIDENTS_URL, {"rule": theirs.pk})
    assert (by_their_rule.status_code, by_their_rule.json()["results"]) == (200, [])
    into_theirs = api.post(RULES_URL, rule_body(other_organization), format="json")
    assert (into_theirs.status_code, list(into_theirs.json())) == (400, ["detail", "organization"])
    assert AlertRule.objects.get().threshold == 1


# ------------------------------------------------------------------------------
# Admin
# ------------------------------------------------------------------------------
def test_admin_disables_rules_and_lists_incidents_and_deliveries(db, admin_client, organization):
    rule = make_rule(organization, threshold=1, email_recipients=["o@a.io"])
    TaskRecordFactory(
        name="taskops.tasks.diagnostic_fail", organization=organization, state=TaskState.FAILURE
    )
    alerts.alert_rule_evaluate(rule=rule)

    response = admin_client.post(
        "/admin/alerts/alertrule/",
        {"action": "disable_rules", "_selected_action": [rule.pk]},
        follow=True,
    )

    assert "1 rule(s) disabled." in response.content.decode()
    rule.refresh_from_db()
    assert not rule.enabled
    assert AlertIncident.objects.get().state == "resolved"
    incidents = admin_client.get("/admin/alerts/alertincident/?state__exact=resolved")
    assert incidents.status_code == 200
    assert "Diagnostics failing" in incidents.content.decode()
    deliveries = admin_client.get("/admin/alerts/alertdelivery/?channel__exact=email")
    assert deliveries.status_code == 200
    assert "o@a.io" in deliveries.content.decode()
    page = admin_client.get(f"/admin/alerts/alertincident/{AlertIncident.objects.get().pk}/change/")
    assert page.status_code == 200


def test_admin_form_names_a_bad_pattern(db, admin_client, organization):
    response = admin_client.post(
        "/admin/alerts/alertrule/add/",
        {
            "organization": organization.pk,
            "name": "Bad",
            "enabled": "on",
            "kind": "task_failures",
            "task_pattern": "integrations tasks",
            "integration": "any",
            "threshold": 3,
            "window_minutes": 15,
            "slack_channel": "",
            "email_recipients": '["ops@acme.test"]',
        },
    )

    assert response.status_code == 200
    assert "no spaces" in response.content.decode()
    assert not AlertRule.objects.exists()
