"""Events and sync write one ledger: ordering, edits, deletions and threads, service level."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import SlackEvent, SlackEventStatus, SlackMessage, SlackWorkspace
from integrations.slack.services import (
    slack_event_process,
    slack_event_receive,
    slack_plain_text,
    slack_subject,
    slack_sync_organization,
)
from tests.integrations.slack.conftest import CHANNEL_ID, event_payload, message_event
from tests.support.slack_server import SlackApiServer
from tickets.models import Ticket
from tickets.signals import tickets_created


def _deliver(payload: dict[str, Any]) -> str:
    """Receive an event as the endpoint does, then process it as the worker does."""
    event, _created = slack_event_receive(payload=payload)
    assert event is not None
    return slack_event_process(event_id=event.event_id)


def _changed(ts: str, text: str, *, edited_ts: str, thread_ts: str | None = None) -> dict:
    inner = {"type": "message", "user": "U0000001", "text": text, "ts": ts}
    inner["edited"] = {"user": "U0000001", "ts": edited_ts}
    if thread_ts:
        inner["thread_ts"] = thread_ts
    return event_payload(
        {
            "type": "message",
            "subtype": "message_changed",
            "channel": CHANNEL_ID,
            "hidden": True,
            "ts": edited_ts,
            "event_ts": edited_ts,
            "message": inner,
        }
    )


def _deleted(ts: str) -> dict:
    return event_payload(
        {
            "type": "message",
            "subtype": "message_deleted",
            "channel": CHANNEL_ID,
            "hidden": True,
            "deleted_ts": ts,
            "ts": "1800000000.000001",
            "event_ts": "1800000000.000001",
            "previous_message": {"type": "message", "user": "U0000001", "text": "x", "ts": ts},
        }
    )


@pytest.mark.parametrize("first", ["event", "sync"])
def test_event_and_sync_of_one_message_make_one_ticket(
    organization, channel, slack_api: SlackApiServer, first
):
    message = slack_api.add_message(CHANNEL_ID, "SSO login loops")
    payload = event_payload(message_event("SSO login loops", ts=message["ts"]))

    if first == "event":
        assert _deliver(payload) == SlackEventStatus.PROCESSED
        slack_sync_organization(organization=organization)
    else:
        slack_sync_organization(organization=organization)
        assert _deliver(payload) == SlackEventStatus.PROCESSED

    assert Ticket.objects.filter(organization=organization).count() == 1
    row = SlackMessage.objects.get()
    assert row.received_via == first
    assert row.ticket == Ticket.objects.get()


def test_redelivered_event_is_recorded_once_and_enqueued_once(
    organization, channel, django_capture_on_commit_callbacks
):
    payload = event_payload(message_event("printer jam", ts="1700000001.000100"))

    with django_capture_on_commit_callbacks() as enqueued:
        first, created_first = slack_event_receive(payload=payload, retry_num=None)
        again, created_again = slack_event_receive(payload=payload, retry_num=1)

    assert created_first
    assert not created_again
    assert first.pk == again.pk
    assert len(enqueued) == 1  # one task published, after commit
    assert SlackEvent.objects.get().deliveries == 2
    assert slack_event_process(event_id=first.event_id) == SlackEventStatus.PROCESSED
    # The task delivered twice (late ack after a crash) finds the state guard.
    assert slack_event_process(event_id=first.event_id) == SlackEventStatus.PROCESSED
    assert Ticket.objects.count() == 1


def test_a_retry_of_an_event_stuck_pending_enqueues_it_again(
    organization, channel, django_capture_on_commit_callbacks
):
    payload = event_payload(message_event("lost enqueue", ts="1700000001.000100"))
    with django_capture_on_commit_callbacks():
        event, _ = slack_event_receive(payload=payload)
    SlackEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=1))

    with django_capture_on_commit_callbacks() as enqueued:
        slack_event_receive(payload=payload, retry_num=1)

    assert len(enqueued) == 1


def test_edit_keeps_the_previous_text_and_the_subject_follows(organization, channel):
    ts = "1700000001.000100"
    _deliver(event_payload(message_event("Outlook crashes on start", ts=ts)))

    _deliver(_changed(ts, "Outlook crashes when opening PDFs", edited_ts="1700000050.000000"))

    ticket = Ticket.objects.get()
    assert ticket.body == "Outlook crashes when opening PDFs"
    assert ticket.subject == "Outlook crashes when opening PDFs"
    row = SlackMessage.objects.get()
    assert row.revisions[0]["text"] == "Outlook crashes on start"
    assert row.edited_ts == "1700000050.000000"


def test_an_older_edit_delivered_late_does_not_win(organization, channel):
    ts = "1700000001.000100"
    _deliver(event_payload(message_event("v1", ts=ts)))
    _deliver(_changed(ts, "v3", edited_ts="1700000090.000000"))

    _deliver(_changed(ts, "v2", edited_ts="1700000050.000000"))

    assert Ticket.objects.get().body == "v3"
    assert [r["text"] for r in SlackMessage.objects.get().revisions] == ["v1"]


def test_a_subject_a_person_rewrote_is_kept_on_edit(organization, channel, user):
    from tickets.services import ticket_update

    ts = "1700000001.000100"
    _deliver(event_payload(message_event("help", ts=ts)))
    ticket_update(ticket=Ticket.objects.get(), data={"subject": "Laptop: no sound"}, user=user)

    _deliver(_changed(ts, "help, my laptop has no sound", edited_ts="1700000050.000000"))

    ticket = Ticket.objects.get()
    assert ticket.subject == "Laptop: no sound"
    assert ticket.body == "help, my laptop has no sound"


def test_an_edit_arriving_before_its_message_creates_the_ticket_once(organization, channel):
    ts = "1700000001.000100"

    _deliver(_changed(ts, "final text", edited_ts="1700000050.000000"))
    _deliver(event_payload(message_event("first text", ts=ts)))

    ticket = Ticket.objects.get()
    assert ticket.body == "final text"


def test_deleted_ticket_message_is_marked_and_shown_in_the_api(organization, channel, api_client):
    ts = "1700000001.000100"
    _deliver(event_payload(message_event("please reset my password", ts=ts)))

    _deliver(_deleted(ts))

    row = SlackMessage.objects.get()
    assert row.deleted_at is not None
    ticket = Ticket.objects.get()
    data = api_client.get(f"/api/v1/tickets/{ticket.pk}").json()
    assert data["slack"]["deleted_at"] is not None
    assert data["slack"]["ts"] == ts


def test_a_deletion_before_the_message_leaves_no_ticket(organization, channel, slack_api):
    message = slack_api.add_message(CHANNEL_ID, "oops wrong channel")

    _deliver(_deleted(message["ts"]))
    _deliver(event_payload(message_event("oops wrong channel", ts=message["ts"])))
    slack_sync_organization(organization=organization)

    assert not Ticket.objects.exists()
    assert SlackMessage.objects.get().deleted_at is not None


def test_a_reply_to_an_unknown_thread_fetches_its_parent(
    organization, channel, slack_api: SlackApiServer
):
    parent, replies = slack_api.add_thread(CHANNEL_ID, "badge reader broken", replies=["door 3"])

    status = _deliver(
        event_payload(message_event("door 3", ts=replies[0]["ts"], thread_ts=parent["ts"]))
    )

    assert status == SlackEventStatus.PROCESSED
    ticket = Ticket.objects.get()
    assert ticket.body == "badge reader broken"
    assert [m.body for m in ticket.messages.all()] == ["door 3"]
    assert slack_api.call_count("conversations.replies") == 1


def test_uninstall_event_disables_the_workspace_and_says_why(organization, workspace):
    _deliver(event_payload({"type": "app_uninstalled", "event_ts": "1700000001.000100"}))

    workspace.refresh_from_db()
    assert not workspace.enabled
    assert workspace.last_error == "Slack: the app was uninstalled; reinstall with Add to Slack"
    assert workspace.disabled_reason == workspace.last_error


def test_revoked_user_tokens_leave_the_bot_working(organization, workspace):
    revoked = {"type": "tokens_revoked", "tokens": {"oauth": ["U0000001"], "bot": []}}

    status = _deliver(event_payload({**revoked, "event_ts": "1700000001.000100"}))

    assert status == SlackEventStatus.IGNORED
    workspace.refresh_from_db()
    assert workspace.enabled
    assert workspace.last_error == ""

    _deliver(
        event_payload(
            {"type": "tokens_revoked", "tokens": {"bot": ["UBOT0001"]}, "event_ts": "1.000200"}
        )
    )
    workspace.refresh_from_db()
    assert not workspace.enabled
    assert "tokens revoked" in workspace.disabled_reason


def test_events_of_an_unknown_or_disabled_workspace_are_ignored(organization, channel):
    unknown = event_payload(message_event("hi", ts="1700000001.000100"), team_id="T9999999")
    event, _ = slack_event_receive(payload=unknown)
    assert event.status == SlackEventStatus.IGNORED
    assert event.note == "unknown workspace"

    SlackWorkspace.objects.update(enabled=False)
    event, _ = slack_event_receive(payload=event_payload(message_event("hi", ts="1700000002.0")))
    assert event.status == SlackEventStatus.IGNORED
    assert not Ticket.objects.exists()


def test_new_slack_tickets_are_announced_for_classification(
    organization, channel, slack_api: SlackApiServer, django_capture_on_commit_callbacks
):
    announced: list[dict[str, Any]] = []

    def listener(sender: Any, **kwargs: Any) -> None:
        announced.append(kwargs)

    for i in range(3):
        slack_api.add_message(CHANNEL_ID, f"problem {i}")
    with django_capture_on_commit_callbacks(execute=False):  # no task is published
        event, _ = slack_event_receive(
            payload=event_payload(message_event("by event", ts="1800000000.000100"))
        )
    tickets_created.connect(listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            slack_sync_organization(organization=organization)
            slack_event_process(event_id=event.event_id)
    finally:
        tickets_created.disconnect(listener)

    ids = sorted(i for call in announced for i in call["ticket_ids"])
    assert ids == sorted(Ticket.objects.values_list("id", flat=True))
    assert {call["source"] for call in announced} == {"slack"}
    assert {call["organization_id"] for call in announced} == {organization.pk}


def test_slack_markup_becomes_readable_text():
    text = "Hi <@U123|dana>, see <https://status.acme.test|status page> in <#C42|ops> &amp; &lt;3"

    assert slack_plain_text(text) == "Hi @dana, see status page in #ops & <3"
    assert slack_subject("\n\n  first   line  \nsecond") == "first line"
    assert len(slack_subject("x" * 500)) == 120


@pytest.mark.parametrize(
    "broken",
    [
        {"ts": "1712345678.0001'; DROP"},
        {"text": ["not", "text"]},
        {"thread_ts": "yesterday"},
    ],
    ids=["ts", "text", "thread_ts"],
)
def test_a_malformed_event_is_rejected_and_the_next_one_still_lands(organization, channel, broken):
    bad = event_payload({**message_event("bad", ts="1712345678.000100"), **broken})
    good = event_payload(message_event("printer jammed", ts="1712345679.000100"))

    event, _ = slack_event_receive(payload=bad)
    assert _deliver(good) == SlackEventStatus.PROCESSED

    # Recorded and set aside with its reason at once: never retried, never a ticket.
    assert event.status == SlackEventStatus.IGNORED
    assert event.note.startswith("malformed message: ")
    assert list(Ticket.objects.values_list("subject", flat=True)) == ["printer jammed"]
    assert SlackMessage.objects.count() == 1
