"""Tests for integrations.slack.client against the real local Slack API server (no Django)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient

from integrations.slack.client import (
    HistoryPage,
    SlackAuthError,
    SlackClientError,
    SlackTransientError,
    SlackUser,
    auth_identity,
    auth_test,
    classify_message,
    iter_history,
    iter_replies,
    make_client,
    post_message,
    user_info,
)
from tests.support.slack_server import (
    DEFAULT_BOT_ID,
    DEFAULT_BOT_USER_ID,
    DEFAULT_TEAM_ID,
    DEFAULT_TOKEN,
    SlackApiServer,
)

CHANNEL = "C0000001"
BOT = DEFAULT_BOT_USER_ID


def _client(server: SlackApiServer, **kwargs: Any) -> WebClient:
    """A client for the default workspace on ``server``."""
    kwargs.setdefault("token", DEFAULT_TOKEN)
    return make_client(base_url=server.url, **kwargs)


def _fill(server: SlackApiServer, count: int) -> list[str]:
    """Add ``count`` top-level messages and return their ts values, oldest first."""
    return [server.add_message(CHANNEL, f"message {i}")["ts"] for i in range(count)]


def _all_ts(pages: list[HistoryPage]) -> list[str]:
    """All message ts values across pages, in the order they were served."""
    return [m["ts"] for page in pages for m in page.messages]


# --------------------------------------------------------------------------- history


def test_history_paginates_3000_messages_exactly_once(
    slack_api: SlackApiServer,
) -> None:
    expected = _fill(slack_api, 3000)
    client = _client(slack_api)

    pages = list(
        iter_history(client=client, channel=CHANNEL, oldest=None, cursor=None, page_size=200)
    )

    seen = _all_ts(pages)
    assert len(pages) == 15
    assert all(len(p.messages) == 200 for p in pages)
    assert len(seen) == len(set(seen)) == 3000
    assert set(seen) == set(expected)
    assert seen == sorted(expected, key=float, reverse=True)  # newest first, like Slack
    assert [p.next_cursor is None for p in pages] == [False] * 14 + [True]
    assert slack_api.call_count("conversations.history") == 15
    assert {r.params["limit"] for r in slack_api.requests} == {"200"}


def test_history_resumes_from_saved_cursor_without_repeats(
    slack_api: SlackApiServer,
) -> None:
    expected = _fill(slack_api, 1000)
    client = _client(slack_api)

    first_run = iter_history(
        client=client, channel=CHANNEL, oldest=None, cursor=None, page_size=100
    )
    committed: list[str] = []
    saved_cursor: str | None = None
    for _ in range(4):  # "crash" after committing four pages
        page = next(first_run)
        committed.extend(m["ts"] for m in page.messages)
        saved_cursor = page.next_cursor
    first_run.close()
    # Messages arriving between runs must not shift the resumed window.
    slack_api.add_message(CHANNEL, "arrived while down")

    assert saved_cursor is not None
    resumed = list(
        iter_history(
            client=client,
            channel=CHANNEL,
            oldest=None,
            cursor=saved_cursor,
            page_size=100,
        )
    )

    assert len(resumed) == 6
    rest = _all_ts(resumed)
    assert not set(rest) & set(committed)
    assert sorted(committed + rest, key=float) == expected


def test_history_oldest_is_exclusive_for_incremental_sync(
    slack_api: SlackApiServer,
) -> None:
    expected = _fill(slack_api, 50)
    client = _client(slack_api)

    pages = list(
        iter_history(
            client=client,
            channel=CHANNEL,
            oldest=expected[29],
            cursor=None,
            page_size=7,
        )
    )

    assert sorted(_all_ts(pages), key=float) == expected[30:]
    assert {r.params["oldest"] for r in slack_api.requests} == {expected[29]}


def test_history_pages_wait_for_retry_after_when_rate_limited(
    slack_api: SlackApiServer,
) -> None:
    expected = _fill(slack_api, 3000)
    slack_api.rate_limit_every = 7
    slack_api.retry_after = 1
    client = _client(slack_api)

    pages = list(
        iter_history(client=client, channel=CHANNEL, oldest=None, cursor=None, page_size=200)
    )

    seen = _all_ts(pages)
    assert len(seen) == len(set(seen)) == 3000
    assert set(seen) == set(expected)
    log = slack_api.requests
    assert slack_api.rate_limited_count == 2  # requests 7 and 14 of 17
    assert len(log) == 17
    for i, record in enumerate(log):
        if record.rate_limited:
            assert log[i + 1].time - record.time >= 1.0
    assert slack_api.retry_after_violations() == []


def test_rate_limit_after_retries_exhausted_is_transient(
    slack_api: SlackApiServer,
) -> None:
    _fill(slack_api, 3)
    slack_api.rate_limit_every = 1
    slack_api.retry_after = 3
    client = _client(slack_api, max_rate_limit_retries=0)

    with pytest.raises(SlackTransientError) as excinfo:
        next(iter_history(client=client, channel=CHANNEL, oldest=None, cursor=None, page_size=10))

    assert excinfo.value.status == 429
    assert excinfo.value.error == "ratelimited"
    assert excinfo.value.retry_after == 3.0
    assert slack_api.call_count() == 1


def test_server_error_is_transient(slack_api: SlackApiServer) -> None:
    _fill(slack_api, 3)
    slack_api.fail_next(status=503, method="conversations.history")

    with pytest.raises(SlackTransientError) as excinfo:
        list(iter_history(client=_client(slack_api), channel=CHANNEL, oldest=None, cursor=None))

    assert excinfo.value.status == 503
    assert excinfo.value.method == "conversations.history"


def test_network_error_is_transient() -> None:
    with socket.socket() as sock:  # grab a free port, then close it so connects are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(
        token=DEFAULT_TOKEN,
        base_url=f"http://127.0.0.1:{port}/api/",
        max_connection_retries=0,
    )

    with pytest.raises(SlackTransientError) as excinfo:
        auth_test(client=client)

    assert excinfo.value.error == "network_error"


def test_unknown_channel_is_plain_client_error(slack_api: SlackApiServer) -> None:
    with pytest.raises(SlackClientError) as excinfo:
        next(iter_history(client=_client(slack_api), channel="CNOPE", oldest=None, cursor=None))

    assert type(excinfo.value) is SlackClientError
    assert excinfo.value.error == "channel_not_found"


# --------------------------------------------------------------------------- auth


def test_auth_test_returns_team_id(slack_api: SlackApiServer) -> None:
    client = _client(slack_api)

    assert auth_test(client=client) == DEFAULT_TEAM_ID
    identity = auth_identity(client=client)
    assert (identity.team_id, identity.user_id, identity.bot_id) == (
        DEFAULT_TEAM_ID,
        DEFAULT_BOT_USER_ID,
        DEFAULT_BOT_ID,
    )


@pytest.mark.parametrize("error", ["invalid_auth", "account_inactive", "token_revoked"])
def test_revoked_token_raises_auth_error(slack_api: SlackApiServer, error: str) -> None:
    slack_api.add_message(CHANNEL, "hello")
    slack_api.revoke(DEFAULT_TOKEN, error)
    client = _client(slack_api)

    with pytest.raises(SlackAuthError) as excinfo:
        auth_test(client=client)
    assert excinfo.value.error == error
    with pytest.raises(SlackAuthError):
        next(iter_history(client=client, channel=CHANNEL, oldest=None, cursor=None))


@pytest.mark.parametrize(("token", "error"), [("xoxb-unknown", "invalid_auth"), ("", "not_authed")])
def test_bad_token_raises_auth_error(slack_api: SlackApiServer, token: str, error: str) -> None:
    with pytest.raises(SlackAuthError) as excinfo:
        auth_test(client=_client(slack_api, token=token))

    assert excinfo.value.error == error


def test_workspaces_are_keyed_by_token(slack_api: SlackApiServer) -> None:
    slack_api.add_workspace(token="xoxb-other", team_id="T0000002")

    assert auth_test(client=_client(slack_api, token="xoxb-other")) == "T0000002"
    assert auth_test(client=_client(slack_api)) == DEFAULT_TEAM_ID


# --------------------------------------------------------------------------- replies, users, post


def test_replies_yield_parent_once_then_replies_in_order(
    slack_api: SlackApiServer,
) -> None:
    slack_api.add_message(CHANNEL, "unrelated")
    parent, replies = slack_api.add_thread(
        CHANNEL, "printer broken", replies=[f"r{i}" for i in range(7)]
    )
    client = _client(slack_api)

    got = list(iter_replies(client=client, channel=CHANNEL, thread_ts=parent["ts"], page_size=3))

    assert [m["ts"] for m in got] == [parent["ts"]] + [r["ts"] for r in replies]
    assert [classify_message(m, bot_user_id=BOT) for m in got] == ["ticket"] + ["reply"] * 7
    assert got[0]["reply_count"] == 7
    assert got[0]["latest_reply"] == replies[-1]["ts"]
    assert slack_api.call_count("conversations.replies") == 4  # 2 replies + parent per page


def test_replies_oldest_filters_replies(slack_api: SlackApiServer) -> None:
    parent, replies = slack_api.add_thread(CHANNEL, "vpn down", replies=["a", "b", "c"])

    got = list(
        iter_replies(
            client=_client(slack_api),
            channel=CHANNEL,
            thread_ts=parent["ts"],
            oldest=replies[0]["ts"],
        )
    )

    assert [m["text"] for m in got] == ["vpn down", "b", "c"]


def test_replies_unknown_thread_is_client_error(slack_api: SlackApiServer) -> None:
    slack_api.add_channel(CHANNEL)

    with pytest.raises(SlackClientError) as excinfo:
        list(iter_replies(client=_client(slack_api), channel=CHANNEL, thread_ts="1.000001"))

    assert excinfo.value.error == "thread_not_found"


def test_replies_are_not_in_history(slack_api: SlackApiServer) -> None:
    parent, _ = slack_api.add_thread(CHANNEL, "parent", replies=["x", "y"])

    pages = list(iter_history(client=_client(slack_api), channel=CHANNEL, oldest=None, cursor=None))

    assert _all_ts(pages) == [parent["ts"]]


def test_user_info_found_and_missing(slack_api: SlackApiServer) -> None:
    slack_api.add_user("U0000042", name="ada", real_name="Ada Lovelace", email="ada@example.com")
    client = _client(slack_api)

    assert user_info(client=client, user_id="U0000042") == SlackUser(
        id="U0000042", name="ada", real_name="Ada Lovelace", email="ada@example.com"
    )
    assert user_info(client=client, user_id="UMISSING") is None


def test_user_info_without_email(slack_api: SlackApiServer) -> None:
    slack_api.add_user("U0000043", name="bob")

    user = user_info(client=_client(slack_api), user_id="U0000043")

    assert user is not None
    assert user.email is None
    assert user.real_name == "Bob"


def test_post_message_is_recorded_and_ignored_by_classifier(
    slack_api: SlackApiServer,
) -> None:
    slack_api.add_channel(CHANNEL)
    client = _client(slack_api)

    ts = post_message(client=client, channel=CHANNEL, text="SLA breach on #42")

    assert [(p["channel"], p["text"], p["ts"]) for p in slack_api.posted] == [
        (CHANNEL, "SLA breach on #42", ts)
    ]
    page = next(iter_history(client=client, channel=CHANNEL, oldest=None, cursor=None))
    assert classify_message(page.messages[0], bot_user_id=BOT) == "ignore"


def test_request_log_records_params_and_resets(slack_api: SlackApiServer) -> None:
    _fill(slack_api, 2)
    client = _client(slack_api)
    auth_test(client=client)
    list(iter_history(client=client, channel=CHANNEL, oldest=None, cursor=None, page_size=5))

    assert [r.method for r in slack_api.requests] == [
        "auth.test",
        "conversations.history",
    ]
    assert slack_api.requests[1].params["channel"] == CHANNEL
    assert slack_api.requests[1].token == DEFAULT_TOKEN
    slack_api.reset_requests()
    assert slack_api.call_count() == 0


def test_generated_ts_are_unique_and_increasing(slack_api: SlackApiServer) -> None:
    explicit = slack_api.add_message(CHANNEL, "explicit", ts="1800000000.000000")
    after = slack_api.add_message(CHANNEL, "after")

    assert float(after["ts"]) > float(explicit["ts"])
    assert re.fullmatch(r"\d{10}\.\d{6}", after["ts"])
    with pytest.raises(ValueError, match="duplicate ts"):
        slack_api.add_message(CHANNEL, "dup", ts=explicit["ts"])


# --------------------------------------------------------------------------- classify_message

_CLASSIFY_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "top-level",
        {"type": "message", "user": "U1", "text": "hi", "ts": "1.000001"},
        "ticket",
    ),
    (
        "thread parent",
        {
            "type": "message",
            "user": "U1",
            "ts": "1.000001",
            "thread_ts": "1.000001",
            "reply_count": 2,
        },
        "ticket",
    ),
    (
        "reply",
        {"type": "message", "user": "U1", "ts": "2.000001", "thread_ts": "1.000001"},
        "reply",
    ),
    (
        "thread_broadcast",
        {
            "type": "message",
            "subtype": "thread_broadcast",
            "user": "U1",
            "ts": "2.1",
            "thread_ts": "1.1",
        },
        "reply",
    ),
    (
        "file_share",
        {"type": "message", "subtype": "file_share", "user": "U1", "ts": "1.1"},
        "ticket",
    ),
    (
        "app_mention event",
        {"type": "app_mention", "user": "U1", "ts": "1.1", "channel": "C1"},
        "ticket",
    ),
    (
        "bot_id",
        {"type": "message", "user": "U1", "bot_id": "B1", "ts": "1.1"},
        "ignore",
    ),
    (
        "bot_message",
        {"type": "message", "subtype": "bot_message", "bot_id": "B1", "ts": "1.1"},
        "ignore",
    ),
    ("own bot user", {"type": "message", "user": BOT, "ts": "1.1"}, "ignore"),
    (
        "channel_join",
        {"type": "message", "subtype": "channel_join", "user": "U1", "ts": "1.1"},
        "ignore",
    ),
    (
        "channel_topic",
        {"type": "message", "subtype": "channel_topic", "user": "U1", "ts": "1.1"},
        "ignore",
    ),
    ("no user", {"type": "message", "text": "?", "ts": "1.1"}, "ignore"),
    (
        "other event type",
        {"type": "reaction_added", "user": "U1", "ts": "1.1"},
        "ignore",
    ),
    (
        "message_changed",
        {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "ts": "3.1",
            "message": {"type": "message", "user": "U1", "text": "edited", "ts": "1.1"},
            "previous_message": {
                "type": "message",
                "user": "U1",
                "text": "orig",
                "ts": "1.1",
            },
        },
        "changed",
    ),
    (
        "bot message_changed",
        {
            "type": "message",
            "subtype": "message_changed",
            "message": {"user": BOT, "ts": "1.1"},
        },
        "ignore",
    ),
    (
        "message_deleted",
        {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "deleted_ts": "1.1",
            "ts": "3.1",
            "previous_message": {"type": "message", "user": "U1", "ts": "1.1"},
        },
        "deleted",
    ),
    (
        "bot message_deleted",
        {
            "type": "message",
            "subtype": "message_deleted",
            "previous_message": {"bot_id": "B1"},
        },
        "ignore",
    ),
    (
        "tombstone parent",
        {"type": "message", "subtype": "tombstone", "ts": "1.1", "thread_ts": "1.1"},
        "deleted",
    ),
]


@pytest.mark.parametrize(
    ("message", "expected"),
    [pytest.param(m, e, id=name) for name, m, e in _CLASSIFY_CASES],
)
def test_classify_message(message: dict[str, Any], expected: str) -> None:
    assert classify_message(message, bot_user_id=BOT) == expected


def test_classify_without_bot_user_id_still_ignores_bot_ids() -> None:
    assert (
        classify_message({"type": "message", "user": BOT, "ts": "1.1"}, bot_user_id=None)
        == "ticket"
    )
    assert (
        classify_message({"user": "U1", "bot_id": "B1", "ts": "1.1"}, bot_user_id=None) == "ignore"
    )


# --------------------------------------------------------------------------- purity


def test_client_module_does_not_import_django() -> None:
    repo = Path(__file__).resolve().parents[3]
    code = (
        "import sys, integrations.slack.client, tests.support.slack_server;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'django', 'rest_framework'});"
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
