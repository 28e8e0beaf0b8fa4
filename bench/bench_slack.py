"""Slack history sync throughput: `manage.py sync_slack` against a persisting slack_sdk loop.

Both read the same channel of the same local Slack Web API server (tests/support/slack_server.py)
in the same run, with the same page size, and write the same rows into the same database.
The baseline is the floor of the job: a bare slack_sdk loop that pages
``conversations.history``, asks ``users.info`` once per user, and writes each page's ticket
rows, Slack-message ledger rows and channel cursor with plain psycopg (``executemany``), one
transaction per page (bench/persist.py). ``sync_slack`` does the same through the project's
services (leases, requester cache table, exactly-once ledger, progress), in one run per
organization. Rounds alternate baseline and project; the ratio is of the medians.

    python -m bench.bench_slack          # or: make bench (every benchmark)

Database: with no DATABASE_URL a throwaway SQLite file in a temporary directory (the
baseline needs PostgreSQL and is skipped); with DATABASE_URL=postgresql://… a throwaway
database ``bench_<name>`` on that server, created and dropped by the run (the named database
itself is never written). The broker is a throwaway ``filesystem://`` folder, so nothing is
published anywhere real. DEBUG is switched off after start-up, as in production.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from io import StringIO
from pathlib import Path
from typing import Any

from bench.common import setup_django, teardown_django

MESSAGES = 3000
PAGE_SIZE = 200
USERS = 25
REPEATS = 3
LATENCY_REPEATS = 2
CHANNEL = "C0BENCH01"
# Second measurement: every API call answered after this delay, closer to slack.com's
# round trip than a loopback server.
LATENCY_SECONDS = 0.05


def _setup_django(tmp: Path) -> str:
    """Django on a throwaway database and broker (bench.common); returns the database."""
    os.environ["SLACK_HISTORY_PAGE_SIZE"] = str(PAGE_SIZE)
    # The production log format (settings pick it when DEBUG is off): JSON lines.
    os.environ.setdefault("ZENITH_LOG_FORMAT", "json")
    return setup_django(tmp, name="slack")


def _connect(*, organization_slug: str, token: str, team_id: str) -> Any:
    """An organization, workspace and channel for one run (set up outside the timing)."""
    from integrations.models import SlackChannel, SlackWorkspace
    from tickets.services import organization_get_or_create

    organization, _ = organization_get_or_create(slug=organization_slug)
    workspace = SlackWorkspace.objects.create(
        organization=organization, team_id=team_id, bot_token=token
    )
    return SlackChannel.objects.create(workspace=workspace, channel_id=CHANNEL, name="bench")


def _persisting_loop(server: Any, index: int) -> float:
    """Messages per second of a slack_sdk loop that writes each page's rows with psycopg."""
    from psycopg import sql
    from slack_sdk import WebClient

    from bench.persist import RowWriter, connect
    from integrations.models import SlackChannel, SlackMessage
    from integrations.slack.services import slack_external_id, slack_plain_text, slack_subject
    from tickets.models import Ticket

    token, team_id = f"xoxb-floor-{index}", f"TFLOOR{index:03d}"
    server.add_workspace(token=token, team_id=team_id)
    channel = _connect(organization_slug=f"floor-{index}", token=token, team_id=team_id)
    organization_id = channel.workspace.organization_id
    tickets, ledger = RowWriter(Ticket), RowWriter(SlackMessage)
    cursor_sql = sql.SQL("UPDATE {} SET sync_cursor = %s WHERE id = %s").format(
        sql.Identifier(SlackChannel._meta.db_table)
    )
    client = WebClient(token=token, base_url=server.url)
    names: dict[str, str] = {}
    with connect() as conn:
        started = time.perf_counter()
        count, cursor = 0, None
        while True:
            response = client.conversations_history(channel=CHANNEL, limit=PAGE_SIZE, cursor=cursor)
            page = [m for m in response["messages"] if m.get("user") and not m.get("subtype")]
            for user_id in sorted({m["user"] for m in page} - names.keys()):
                user = client.users_info(user=user_id)["user"]
                label = user.get("real_name") or user.get("name") or user_id
                email = (user.get("profile") or {}).get("email")
                names[user_id] = f"{label} <{email}>" if email else label
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or ""
            with conn.transaction(), conn.cursor() as cur:
                ids = tickets.insert(
                    cur,
                    [
                        {
                            "organization_id": organization_id,
                            "source": "slack",
                            "external_id": slack_external_id(
                                team_id=team_id, channel_id=CHANNEL, ts=m["ts"]
                            ),
                            "subject": slack_subject(m["text"]),
                            "body": slack_plain_text(m["text"]),
                            "requester": names[m["user"]],
                        }
                        for m in page
                    ],
                )
                ledger.insert(
                    cur,
                    [
                        {
                            "organization_id": organization_id,
                            "team_id": team_id,
                            "channel_id": CHANNEL,
                            "ts": m["ts"],
                            "kind": "ticket",
                            "user_id": m["user"],
                            "text": m["text"],
                            "ticket_id": ticket_id,
                            "received_via": "sync",
                        }
                        for m, ticket_id in zip(page, ids, strict=True)
                    ],
                )
                cur.execute(cursor_sql, [cursor, channel.pk])
            count += len(page)
            if not cursor:
                break
        elapsed = time.perf_counter() - started
    written = Ticket.objects.filter(organization_id=organization_id).count()
    assert count == written == MESSAGES, (count, written)
    return count / elapsed


def _zenith_sync(server: Any, index: int) -> float:
    """Messages per second of `manage.py sync_slack --org` for a fresh organization."""
    from django.core.management import call_command

    from tickets.models import Ticket

    token, team_id = f"xoxb-bench-{index}", f"TBENCH{index:03d}"
    server.add_workspace(token=token, team_id=team_id)
    channel = _connect(organization_slug=f"bench-{index}", token=token, team_id=team_id)
    organization = channel.workspace.organization
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

    suffix = f"_{int(latency * 1000)}ms_latency" if latency else ""
    name = f"slack_sync_throughput{suffix}"
    if database != "postgresql":
        return {"name": name, "note": "skipped: the psycopg baseline needs PostgreSQL"}
    server = _server(latency)
    baselines, values = [], []
    try:
        settings.SLACK_API_URL = server.url
        _persisting_loop(server, first_index + 99)  # warm-up: imports, sockets, caches
        for i in range(repeats):
            baselines.append(_persisting_loop(server, first_index + i))
            values.append(_zenith_sync(server, first_index + i))
    finally:
        server.stop()
    baseline, value = statistics.median(baselines), statistics.median(values)
    where = f"API latency {int(latency * 1000)} ms" if latency else "loopback API, no latency"
    return {
        "name": name,
        "value": round(value, 1),
        "baseline": round(baseline, 1),
        "ratio": round(value / baseline, 3),
        "unit": "messages/s",
        "note": (
            f"sync_slack vs slack_sdk history loop + users.info once per user + each page's "
            f"ticket, ledger and cursor rows by psycopg executemany (one transaction per page); "
            f"{MESSAGES} messages, page {PAGE_SIZE}, {USERS} users, rounds alternate, median "
            f"of {repeats} (baseline {_spread(baselines)}, sync {_spread(values)}), "
            f"{database}, {where}, no 429s"
        ),
    }


def _spread(values: list[float]) -> str:
    return "-".join(f"{v:.0f}" for v in sorted(values))


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="zenith-bench-slack-") as name:
        database = _setup_django(Path(name))

        try:
            rows = [
                _measure(latency=0, first_index=0, repeats=REPEATS, database=database),
                _measure(
                    latency=LATENCY_SECONDS,
                    first_index=100,
                    repeats=LATENCY_REPEATS,
                    database=database,
                ),
            ]
        finally:
            teardown_django(database)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
