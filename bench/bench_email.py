"""E-mail ingestion throughput: `manage.py sync_email` against a bare imapclient loop.

Both read the same 2,000 messages from the same folder of a throw-away Dovecot
(tests/support/dovecot.py) in the same run. The bare loop logs in, searches, fetches
``BODY.PEEK[]`` in batches of the same size and parses every message with the same
parser (integrations.email.parsing). ``sync_email`` also takes the mailbox lease,
writes a ledger row, a ticket and the cursor in one transaction per message, stores
attachments, and marks each batch ``\\Seen`` after its commits.

    python -m bench.bench_email          # or: make bench (every benchmark)

Needs root and the dovecot binary (as the Dovecot test fixture does). Database: with
no DATABASE_URL a throwaway SQLite file in a temporary directory; with
DATABASE_URL=postgresql://… a throwaway database ``bench_<name>`` on that server,
created and dropped by the run. The broker is a throwaway ``filesystem://`` folder.
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

MESSAGES = 2000
REPEATS = 3
# Every 20th message has a small attachment, every 10th is HTML-only.
ATTACHMENT_EVERY = 20
HTML_EVERY = 10


def _setup_django(tmp: Path) -> str:
    """Django on a throwaway database and broker (bench.common); returns the database."""
    return setup_django(tmp, name="email")


def _messages() -> list[bytes]:
    from tests import email_samples as samples

    raws = []
    for i in range(MESSAGES):
        subject = f"Ticket {i}: VPN drops after login on laptop {i % 37}"
        if i % ATTACHMENT_EVERY == 0:
            raws.append(samples.with_attachments(subject=subject))
        elif i % HTML_EVERY == 0:
            raws.append(samples.html_only(subject=subject))
        else:
            body = (
                f"Hello,\n\nsince this morning the VPN drops every {i % 9 + 2} minutes.\n"
                "I already restarted the laptop twice.\n\nThanks,\nAlice\n"
            )
            raws.append(samples.plain(subject, body))
    return raws


def _fill(server: Any) -> tuple[str, str]:
    """A Dovecot user whose INBOX holds the benchmark messages."""
    username, password = server.add_user("bench")
    with server.client((username, password)) as imap:
        for raw in _messages():
            imap.append("INBOX", raw)
    return username, password


def _bare_loop(server: Any, username: str, password: str) -> float:
    """Messages per second of a plain imapclient search + fetch + parse loop."""
    from imapclient import IMAPClient

    from integrations.email.parsing import parse_message
    from integrations.email.services import FETCH_BATCH_MESSAGES

    started = time.perf_counter()
    count = 0
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=30)
    try:
        client.login(username, password)
        client.select_folder("INBOX")
        uids = sorted(client.search(["UID", "1:*"]))
        for start in range(0, len(uids), FETCH_BATCH_MESSAGES):
            data = client.fetch(uids[start : start + FETCH_BATCH_MESSAGES], ["BODY.PEEK[]"])
            for item in data.values():
                parse_message(item[b"BODY[]"])
                count += 1
    finally:
        client.logout()
    elapsed = time.perf_counter() - started
    assert count == MESSAGES, count
    return count / elapsed


def _zenith_sync(server: Any, username: str, password: str, index: int) -> float:
    """Tickets per second of `manage.py sync_email --org` for a fresh organization."""
    from django.core.management import call_command

    from integrations.email import services as email_services
    from tickets.models import Ticket
    from tickets.services import organization_get_or_create

    organization, _ = organization_get_or_create(slug=f"bench-{index}")
    email_services.mailbox_create(
        organization=organization,
        name="bench",
        host=server.host,
        port=server.port,
        security="none",
        username=username,
        password=password,
    )
    started = time.perf_counter()
    call_command("sync_email", "--org", organization.slug, stdout=StringIO())
    elapsed = time.perf_counter() - started
    created = Ticket.objects.filter(organization=organization).count()
    assert created == MESSAGES, created
    return created / elapsed


def run() -> list[dict[str, Any]]:
    from tests.support.dovecot import DovecotServer, find_dovecot

    binary = find_dovecot()
    if binary is None or os.geteuid() != 0:
        return [{"name": "email_sync_throughput", "note": "skipped: needs root and dovecot"}]
    with tempfile.TemporaryDirectory(prefix="zenith-bench-email-") as name:
        database = _setup_django(Path(name))
        from django.db import connection

        server = DovecotServer(binary=binary)
        server.start()
        try:
            username, password = _fill(server)
            _bare_loop(server, username, password)  # warm-up: imports, Dovecot's caches
            baseline = statistics.median(
                _bare_loop(server, username, password) for _ in range(REPEATS)
            )
            value = statistics.median(
                _zenith_sync(server, username, password, i) for i in range(REPEATS)
            )
        finally:
            server.cleanup()
            if database == "postgresql":
                connection.creation.destroy_test_db(
                    connection.settings_dict["NAME"], verbosity=0, keepdb=False
                )
    return [
        {
            "name": "email_sync_throughput",
            "value": round(value, 1),
            "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3),
            "unit": "tickets/s",
            "note": (
                f"sync_email vs bare imapclient fetch+parse loop; {MESSAGES} messages "
                f"(1/{HTML_EVERY} HTML-only, 1/{ATTACHMENT_EVERY} with 2 attachments), "
                f"fetch batch {_batch()}, one transaction per message, median of {REPEATS}, "
                f"{database}, loopback Dovecot"
            ),
        }
    ]


def _batch() -> int:
    from integrations.email.services import FETCH_BATCH_MESSAGES

    return FETCH_BATCH_MESSAGES


if __name__ == "__main__":
    for row in run():
        print(row)
