"""History sync against the local Slack Web API server: pages, threads, 429s, bad tokens."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from integrations.models import SlackChannel, SlackMessage, SlackWorkspace
from integrations.slack.services import slack_sync_organization
from tests.integrations.factories import SlackChannelFactory, SlackWorkspaceFactory
from tests.integrations.slack.conftest import CHANNEL_ID
from tests.support.slack_server import DEFAULT_USER_ID, SlackApiServer
from tickets.models import Organization, Ticket, TicketMessage


def _sync(organization: Organization) -> dict[str, Any]:
    return slack_sync_organization(organization=organization).as_dict()


def _ticket_keys(organization: Organization) -> Counter[str]:
    return Counter(
        Ticket.objects.filter(organization=organization, source="slack").values_list(
            "external_id", flat=True
        )
    )


def test_history_becomes_one_ticket_per_message_across_pages(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    sent = [slack_api.add_message(CHANNEL_ID, f"printer {i} is on fire")["ts"] for i in range(120)]

    report = _sync(organization)

    keys = _ticket_keys(organization)
    assert keys == Counter({f"T0000001:{CHANNEL_ID}:{ts}": 1 for ts in sent})
    assert report["tickets"] == 120
    assert report["pages"] == 3  # 50 + 50 + 20
    ticket = Ticket.objects.get(external_id=f"T0000001:{CHANNEL_ID}:{sent[7]}")
    assert ticket.subject == "printer 7 is on fire"
    assert ticket.requester == "Dana Scully <dana@acme.test>"
    channel.refresh_from_db()
    assert channel.latest_ts == sent[-1]
    assert channel.sync_cursor == ""
    assert channel.last_sync_at is not None
    # users.info once for the one author, not once per message.
    assert slack_api.call_count("users.info") == 1


def test_second_sync_reads_nothing_new_and_creates_nothing(
    organization, channel: SlackChannel, slack_api: SlackApiServer, settings
):
    for i in range(30):
        slack_api.add_message(CHANNEL_ID, f"vpn down {i}")
    _sync(organization)
    settings.SLACK_SYNC_OVERLAP_SECONDS = 0
    slack_api.reset_requests()
    newer = slack_api.add_message(CHANNEL_ID, "one more")["ts"]

    report = _sync(organization)

    assert report["tickets"] == 1
    assert Ticket.objects.filter(organization=organization).count() == 31
    history = [r for r in slack_api.requests if r.method == "conversations.history"]
    assert len(history) == 1
    assert history[0].params["oldest"] < newer


def test_overlap_finds_new_replies_of_recent_threads(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    parent, replies = slack_api.add_thread(CHANNEL_ID, "laptop broken", replies=["which one?"])
    _sync(organization)
    later = slack_api.add_message(CHANNEL_ID, "the thinkpad", thread_ts=parent["ts"])

    report = _sync(organization)

    ticket = Ticket.objects.get(external_id=f"T0000001:{CHANNEL_ID}:{parent['ts']}")
    assert [m.body for m in ticket.messages.order_by("id")] == ["which one?", "the thinkpad"]
    assert report["replies"] == 1
    assert report["tickets"] == 0
    row = SlackMessage.objects.get(ts=parent["ts"])
    assert row.latest_reply_ts == later["ts"]
    # The second sync asked only for replies newer than the one it had.
    calls = [r for r in slack_api.requests if r.method == "conversations.replies"]
    assert calls[-1].params.get("oldest") == replies[0]["ts"]


def test_thread_replies_become_follow_ups_of_their_ticket(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    parent, _ = slack_api.add_thread(
        CHANNEL_ID, "email bounces", replies=[f"still bouncing {i}" for i in range(7)]
    )
    slack_api.add_message(CHANNEL_ID, "unrelated")

    _sync(organization)

    ticket = Ticket.objects.get(external_id=f"T0000001:{CHANNEL_ID}:{parent['ts']}")
    bodies = list(ticket.messages.order_by("created_at", "id").values_list("body", flat=True))
    assert bodies == [f"still bouncing {i}" for i in range(7)]
    assert Ticket.objects.filter(organization=organization).count() == 2
    assert TicketMessage.objects.filter(ticket__organization=organization).count() == 7
    assert all(m.author == "Dana Scully <dana@acme.test>" for m in ticket.messages.all())


def test_bot_messages_and_housekeeping_are_not_tickets(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    slack_api.add_message(CHANNEL_ID, "a person needs help")
    slack_api.add_message(
        CHANNEL_ID, "deploy finished", user=None, bot_id="B999", subtype="bot_message"
    )
    slack_api.add_message(CHANNEL_ID, "our own bot", user="UBOT0001", bot_id="BBOT0001")
    slack_api.add_message(CHANNEL_ID, "<@U0000001> has joined", subtype="channel_join")

    _sync(organization)

    assert list(Ticket.objects.values_list("body", flat=True)) == ["a person needs help"]


def test_edited_message_in_history_keeps_its_previous_text(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    ts = slack_api.add_message(CHANNEL_ID, "wifi is slwo")["ts"]
    _sync(organization)
    message = slack_api.channels[CHANNEL_ID].by_ts[int(ts.replace(".", ""))]
    message["text"] = "wifi is slow"
    message["edited"] = {"user": DEFAULT_USER_ID, "ts": slack_api.next_ts()}

    report = _sync(organization)

    assert report["edited"] == 1
    ticket = Ticket.objects.get()
    assert ticket.body == "wifi is slow"
    assert ticket.subject == "wifi is slow"
    row = SlackMessage.objects.get(ts=ts)
    assert [r["text"] for r in row.revisions] == ["wifi is slwo"]


def test_revoked_token_is_recorded_and_the_other_workspace_syncs(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    other = SlackWorkspaceFactory(
        organization=organization, team_id="T0000002", bot_token="xoxb-second"
    )
    slack_api.add_workspace(token="xoxb-second", team_id="T0000002")
    SlackChannelFactory(workspace=other, channel_id="C0000002", name="ops")
    slack_api.add_message("C0000002", "disk full on db-2")
    slack_api.add_message(CHANNEL_ID, "never read: the token is dead")
    slack_api.revoke("xoxb-test-token", "account_inactive")

    report = _sync(organization)

    dead = SlackWorkspace.objects.get(team_id="T0000001")
    assert "account_inactive" in dead.last_error
    assert dead.last_error_at is not None
    alive = SlackWorkspace.objects.get(team_id="T0000002")
    assert alive.last_error == ""
    assert alive.last_sync_at is not None
    assert list(Ticket.objects.values_list("body", flat=True)) == ["disk full on db-2"]
    assert [e["workspace"] for e in report["errors"]] == ["T0000001"]
    assert "auth.test: account_inactive" in report["errors"][0]["error"]


def test_a_failure_mid_pass_resumes_from_the_saved_cursor(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    sent = [slack_api.add_message(CHANNEL_ID, f"msg {i}")["ts"] for i in range(140)]
    # The first page is answered, the second fails (it is asked for while the first is
    # written: the failure surfaces once the first page's commit is done).
    slack_api.fail_next(status=500, method="conversations.history", after=1)

    report = slack_sync_organization(organization=organization).as_dict()

    channel.refresh_from_db()
    assert "conversations.history" in report["errors"][0]["error"]
    assert "conversations.history" in channel.last_error
    assert channel.sync_cursor  # the pass stopped halfway and remembers where
    assert channel.latest_ts == ""  # unfinished: the high-water mark did not move
    assert Ticket.objects.count() == 50
    slack_api.reset_requests()

    _sync(organization)

    assert _ticket_keys(organization) == Counter({f"T0000001:{CHANNEL_ID}:{ts}": 1 for ts in sent})
    first = next(r for r in slack_api.requests if r.method == "conversations.history")
    assert first.params.get("cursor"), "the second run resumed from the saved cursor"
    assert slack_api.call_count("conversations.history") == 2  # pages 2 and 3 only
    channel.refresh_from_db()
    assert channel.sync_cursor == ""
    assert channel.latest_ts == sent[-1]
    assert channel.last_error == ""


@pytest.mark.slow
def test_3000_messages_with_429s_each_message_once_and_retry_after_honoured(
    organization, channel: SlackChannel, slack_api: SlackApiServer, settings
):
    settings.SLACK_HISTORY_PAGE_SIZE = 200
    users = [f"U{i:07d}" for i in range(40)]
    for uid in users:
        slack_api.add_user(uid, real_name=f"Person {uid}")
    sent = []
    for i in range(3000):
        thread = sent[-1] if i % 100 == 99 else None  # 30 replies spread over 30 threads
        message = slack_api.add_message(
            CHANNEL_ID, f"ticket text {i}", user=users[i % 40], thread_ts=thread
        )
        sent.append(message["ts"])
    slack_api.rate_limit_every = 12
    slack_api.retry_after = 1
    slack_api.reset_requests()

    report = _sync(organization)

    replies = {ts for i, ts in enumerate(sent) if i % 100 == 99}
    tops = [ts for ts in sent if ts not in replies]
    assert _ticket_keys(organization) == Counter({f"T0000001:{CHANNEL_ID}:{ts}": 1 for ts in tops})
    assert TicketMessage.objects.count() == len(replies) == 30
    assert SlackMessage.objects.count() == 3000
    assert report["tickets"] == 2970
    assert report["replies"] == 30
    assert slack_api.rate_limited_count >= 3
    assert slack_api.retry_after_violations() == []


def test_broken_messages_are_skipped_and_the_rest_of_the_page_becomes_tickets(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    """One bad message never blocks a channel: it is logged, counted, and passed over."""
    sent = [slack_api.add_message(CHANNEL_ID, f"monitor {i} flickers")["ts"] for i in range(8)]
    good = {sent[0], sent[3], sent[7]}
    slack_api.mangle(sent[1], {"type": "message", "user": DEFAULT_USER_ID, "text": "no ts"})
    slack_api.mangle(sent[2], {"type": "message", "user": DEFAULT_USER_ID, "ts": "not-a-ts"})
    slack_api.mangle(sent[4], "a bare string")
    slack_api.mangle(
        sent[5], {"type": "message", "user": DEFAULT_USER_ID, "ts": sent[5], "text": {"x": 1}}
    )
    slack_api.mangle(
        sent[6],
        {"type": "message", "user": DEFAULT_USER_ID, "ts": sent[6], "text": "hi", "thread_ts": [1]},
    )

    report = _sync(organization)

    assert report["rejected"] == 5
    assert report["tickets"] == 3
    assert report["errors"] == []
    assert _ticket_keys(organization) == Counter({f"T0000001:{CHANNEL_ID}:{ts}": 1 for ts in good})
    channel.refresh_from_db()
    assert channel.latest_ts == sent[7]  # the channel moved on past them
    assert channel.last_error == ""
    again = _sync(organization)
    assert again["tickets"] == 0
    assert again["errors"] == []


def test_control_characters_and_broken_unicode_from_slack_are_cleaned_not_fatal(
    organization, channel: SlackChannel, slack_api: SlackApiServer
):
    """PostgreSQL stores no NUL and no lone surrogate; Slack's JSON can carry both."""
    slack_api.add_user("U0NULNAME", real_name="Fox\x00 Mulder\x07", email="fox@acme.test")
    texts = ["vpn\x00 is down\x1b[31m", "disk \ud800full", "keyboard\x00\x00 sticky", "plain"]
    sent = [slack_api.add_message(CHANNEL_ID, text, user="U0NULNAME")["ts"] for text in texts]
    reply = slack_api.add_message(CHANNEL_ID, "me\x00 too", user="U0NULNAME", thread_ts=sent[0])

    report = _sync(organization)

    assert (report["tickets"], report["errors"], report["rejected"]) == (4, [], 0)
    bodies = [Ticket.objects.get(external_id=f"T0000001:{CHANNEL_ID}:{ts}").body for ts in sent]
    assert bodies == ["vpn is down[31m", "disk \ufffdfull", "keyboard sticky", "plain"]
    ticket = Ticket.objects.get(external_id=f"T0000001:{CHANNEL_ID}:{sent[0]}")
    assert ticket.subject == "vpn is down[31m"
    assert ticket.requester == "Fox Mulder <fox@acme.test>"
    assert TicketMessage.objects.get(external_id=f"T0000001:{CHANNEL_ID}:{reply['ts']}").body == (
        "me too"
    )
