"""Signed Events API requests through the live endpoint (real HTTP, real worker thread)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from integrations.models import SlackEvent, SlackEventStatus, SlackMessage
from tests.integrations.slack.conftest import (
    CHANNEL_ID,
    event_payload,
    http_post,
    message_event,
    signed_headers,
    wait_until,
)
from tests.support.slack_server import DEFAULT_BOT_ID, DEFAULT_BOT_USER_ID, SlackApiServer
from tickets.models import Ticket

TS = "1700000123.000100"


def _processed(event_id: str) -> SlackEvent | None:
    return SlackEvent.objects.filter(event_id=event_id).exclude(status="pending").first()


def test_four_concurrent_deliveries_of_one_event_make_one_ticket(
    post_event, channel, inthread_worker
):
    payload = event_payload(message_event("My monitor flickers", ts=TS))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda n: post_event(payload, retry_num=n), range(4)))
    elapsed = time.monotonic() - started

    assert [a.status for a in answers] == [200, 200, 200, 200]
    assert elapsed < 3, "Slack wants its answer within 3 seconds"
    event = wait_until(lambda: _processed(payload["event_id"]), what="the event processed")
    assert event.status == SlackEventStatus.PROCESSED
    assert event.deliveries == 4
    ticket = Ticket.objects.get()
    assert ticket.source == "slack"
    assert ticket.external_id == f"T0000001:{CHANNEL_ID}:{TS}"
    assert ticket.subject == "My monitor flickers"
    assert ticket.requester == "Dana Scully <dana@acme.test>"
    assert SlackMessage.objects.get().ticket == ticket
    # Retries arriving after processing still change nothing.
    assert post_event(payload, retry_num=3).status == 200
    time.sleep(0.5)
    assert Ticket.objects.count() == 1


@pytest.mark.parametrize(
    "tamper",
    ["stale timestamp", "wrong signature", "wrong secret", "missing headers", "body changed"],
)
def test_unverified_requests_get_401_and_create_nothing(post_event, channel, tamper):
    payload = event_payload(message_event("let me in", ts=TS))
    body = json.dumps(payload).encode()
    if tamper == "stale timestamp":
        headers = signed_headers(body, timestamp=int(time.time()) - 60 * 6)
    elif tamper == "wrong secret":
        headers = signed_headers(body, secret="not-the-secret")
    else:
        headers = signed_headers(body)
    if tamper == "wrong signature":
        headers["X-Slack-Signature"] = "v0=" + "0" * 64
    if tamper == "missing headers":
        headers = {"Content-Type": "application/json"}
    if tamper == "body changed":
        body = body.replace(b"let me in", b"let me in!")

    answer = http_post(post_event.url, body, headers)

    assert answer.status == 401
    assert not SlackEvent.objects.exists()
    assert not Ticket.objects.exists()


def test_url_verification_handshake_echoes_the_challenge(post_event):
    payload = {
        "token": "x",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }

    answer = post_event(payload)

    assert answer.status == 200
    assert answer.json()["challenge"] == payload["challenge"]


def test_without_a_signing_secret_the_endpoint_refuses(post_event, settings, channel):
    settings.SLACK_SIGNING_SECRET = ""

    answer = post_event(event_payload(message_event("hello", ts=TS)))

    assert answer.status == 503
    assert not SlackEvent.objects.exists()


def test_bot_posts_and_unwatched_channels_are_acknowledged_but_ignored(
    post_event, channel, inthread_worker
):
    own = event_payload(
        message_event("Ticket #1 created", ts=TS, user=DEFAULT_BOT_USER_ID, bot_id=DEFAULT_BOT_ID)
    )
    other_bot = event_payload(
        message_event("build green", ts="1700000124.000100", bot_id="B777", subtype="bot_message")
    )
    elsewhere = event_payload(message_event("hi", ts="1700000125.000100", channel="C0000999"))
    person = event_payload(message_event("real request", ts="1700000126.000100"))

    answers = [post_event(p) for p in (own, other_bot, elsewhere, person)]

    assert [a.status for a in answers] == [200, 200, 200, 200]
    wait_until(lambda: _processed(person["event_id"]), what="the person's event")
    assert list(Ticket.objects.values_list("body", flat=True)) == ["real request"]
    ignored = SlackEvent.objects.filter(status=SlackEventStatus.IGNORED)
    # Bolt drops our own bot's events before they reach the ledger; the rest say why.
    assert sorted(ignored.values_list("note", flat=True)) == [
        "channel not watched",
        "not a person's message",
    ]


def test_thread_reply_edit_and_delete_through_the_endpoint(
    post_event, channel, inthread_worker, slack_api: SlackApiServer
):
    parent = event_payload(message_event("VPN drops every hour", ts=TS))
    reply_ts = "1700000200.000100"
    reply = event_payload(message_event("since Monday", ts=reply_ts, thread_ts=TS))
    edit = event_payload(
        {
            "type": "message",
            "subtype": "message_changed",
            "channel": CHANNEL_ID,
            "hidden": True,
            "ts": "1700000300.000100",
            "event_ts": "1700000300.000100",
            "message": {
                "type": "message",
                "user": "U0000001",
                "text": "since Tuesday",
                "ts": reply_ts,
                "thread_ts": TS,
                "edited": {"user": "U0000001", "ts": "1700000300.000000"},
            },
            "previous_message": {
                "type": "message",
                "user": "U0000001",
                "text": "since Monday",
                "ts": reply_ts,
                "thread_ts": TS,
            },
        }
    )
    delete = event_payload(
        {
            "type": "message",
            "subtype": "message_deleted",
            "channel": CHANNEL_ID,
            "hidden": True,
            "deleted_ts": reply_ts,
            "ts": "1700000400.000100",
            "event_ts": "1700000400.000100",
            "previous_message": {
                "type": "message",
                "user": "U0000001",
                "text": "since Tuesday",
                "ts": reply_ts,
                "thread_ts": TS,
            },
        }
    )

    for payload in (parent, reply, edit):
        assert post_event(payload).status == 200
        wait_until(lambda p=payload: _processed(p["event_id"]), what="processing")

    ticket = Ticket.objects.get()
    message = ticket.messages.get()
    assert message.body == "since Tuesday"
    assert message.edited_at is not None
    assert [r["text"] for r in SlackMessage.objects.get(ts=reply_ts).revisions] == ["since Monday"]

    assert post_event(delete).status == 200
    wait_until(lambda: _processed(delete["event_id"]), what="the deletion")

    message.refresh_from_db()
    assert message.deleted_at is not None
    assert SlackMessage.objects.get(ts=reply_ts).deleted_at is not None
    assert Ticket.objects.count() == 1
    assert slack_api.call_count("conversations.replies") == 0


def test_an_event_with_nul_characters_becomes_a_clean_ticket(post_event, channel, inthread_worker):
    """JSON may carry "\\u0000", which PostgreSQL's text and jsonb refuse."""
    payload = event_payload(message_event("printer\x00 jammed \ud800again", ts=TS))

    answer = post_event(payload)

    assert answer.status == 200
    event = wait_until(lambda: _processed(payload["event_id"]), what="the event processed")
    assert event.status == SlackEventStatus.PROCESSED
    ticket = Ticket.objects.get()
    assert (ticket.subject, ticket.body) == ("printer jammed \ufffdagain",) * 2
