"""Slack history sync throughput: `manage.py sync_slack` against a bare slack_sdk paging loop.

Both read the same channel of the same local Slack Web API server (tests/support/slack_server.py)
in the same run, with the same page size. The bare loop only pages
``conversations.history``; ``sync_slack`` also resolves requesters (``users.info``,
cached), writes a ticket and a ledger row per message and saves its cursor per page.

    python -m bench.bench_slack          # or: make bench (every benchmark)

Database: with no DATABASE_URL a throwaway SQLite file in a temporary directory; with
DATABASE_URL=postgresql://… a throwaway database ``bench_<name>`` on that server, created
and dropped by the run (the named database itself is never written). The broker is a
throwaway ``filesystem://`` folder, so nothing is published anywhere real. DEBUG is
switched off after start-up, as in production (no per-query log).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from io import StringIO
from pathlib import Path
from typing import Any

from bench.common import setup_django

MESSAGES = 3000
PAGE_SIZE = 200
USERS = 25
REPEATS = 3
CHANNEL = "C0BENCH01"
# Second measurement: every API call answered after this delay, closer to slack.com's
# round trip than a loopback server.
LATENCY_SECONDS = 0.05


def _setup_django(tmp: Path) -> str:
    """Django on a throwaway database and broker (bench.common); returns the database."""
    os.environ["SLACK_HISTORY_PAGE_SIZE"] = str(PAGE_SIZE)
    return setup_django(tmp, name="slack")


def _bare_loop(server: Any, token: str) -> float:
    """Messages per second of a plain slack_sdk loop over every history page."""
    from slack_sdk import WebClient

    client = WebClient(token=token, base_url=server.url)
    started = time.perf_counter()
    count, cursor = 0, None
    while True:
        response = client.conversations_history(channel=CHANNEL, limit=PAGE_SIZE, cursor=cursor)
        count += len(response["messages"])
        cursor = (response.get("response_metadata") or {}).get("next_cursor")
        if not cursor:
            break
    elapsed = time.perf_counter() - started
    assert count == MESSAGES, count
    return count / elapsed


def _zenith_sync(server: Any, index: int) -> float:
    """Messages per second of `manage.py sync_slack --org` for a fresh organization."""
    from django.core.management import call_command

    from integrations.models import SlackChannel, SlackWorkspace
    from tickets.models import Ticket
    from tickets.services import organization_get_or_create

    token, team_id = f"xoxb-bench-{index}", f"TBENCH{index:03d}"
    server.add_workspace(token=token, team_id=team_id)
    organization, _ = organization_get_or_create(slug=f"bench-{index}")
    workspace = SlackWorkspace.objects.create(
        organization=organization, team_id=team_id, bot_token=token
    )
    SlackChannel.objects.create(workspace=workspace, channel_id=CHANNEL, name="bench")
    started = time.perf_counter()
    call_command("sync_slack", "--org", organization.slug, stdout=StringIO())
    elapsed = time.perf_counter() - started
    created = Ticket.objects.filter(organization=organization).count()
    assert created == MESSAGES, created
    return MESSAGES / elapsed


def _server(latency: float) -> Any:
    """A started local Slack API server holding the benchmark channel."""
    from tests.support.slack_server import SlackApiServer

    class SlowSlackApiServer(SlackApiServer):
        def handle(self, **kwargs: Any) -> Any:
            time.sleep(latency)
            return super().handle(**kwargs)

    server = (SlowSlackApiServer if latency else SlackApiServer)().start()
    for i in range(USERS):
        server.add_user(f"UBENCH{i:03d}", real_name=f"Person {i}", email=f"p{i}@acme.test")
    for i in range(MESSAGES):
        server.add_message(
            CHANNEL, f"ticket {i}: vpn drops after login", user=f"UBENCH{i % USERS:03d}"
        )
    return server


def _measure(*, latency: float, first_index: int, repeats: int, database: str) -> dict[str, Any]:
    from django.conf import settings

    from tests.support.slack_server import DEFAULT_TOKEN

    server = _server(latency)
    try:
        settings.SLACK_API_URL = server.url
        _bare_loop(server, DEFAULT_TOKEN)  # warm-up: imports, sockets
        baseline = statistics.median(_bare_loop(server, DEFAULT_TOKEN) for _ in range(repeats))
        value = statistics.median(_zenith_sync(server, first_index + i) for i in range(repeats))
    finally:
        server.stop()
    suffix = f"_{int(latency * 1000)}ms_latency" if latency else ""
    where = f"API latency {int(latency * 1000)} ms" if latency else "loopback API, no latency"
    return {
        "name": f"slack_sync_throughput{suffix}",
        "value": round(value, 1),
        "baseline": round(baseline, 1),
        "ratio": round(value / baseline, 3),
        "unit": "messages/s",
        "note": (
            f"sync_slack vs bare slack_sdk history loop; {MESSAGES} messages, page "
            f"{PAGE_SIZE}, {USERS} users (users.info each), median of {repeats}, "
            f"{database}, {where}, no 429s"
        ),
    }


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="zenith-bench-slack-") as name:
        database = _setup_django(Path(name))
        from django.db import connection

        try:
            rows = [
                _measure(latency=0, first_index=0, repeats=REPEATS, database=database),
                _measure(latency=LATENCY_SECONDS, first_index=100, repeats=1, database=database),
            ]
        finally:
            if database == "postgresql":
                connection.creation.destroy_test_db(
                    connection.settings_dict["NAME"], verbosity=0, keepdb=False
                )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
