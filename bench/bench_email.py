"""E-mail ingestion throughput: `manage.py sync_email` against a persisting imapclient loop.

Both read the same 2,000 messages from the same folder of a throw-away Dovecot
(tests/support/dovecot.py) in the same run and write the same rows into the same database.
The baseline is the floor of the job: a bare imapclient loop that logs in, searches,
fetches ``BODY.PEEK[]`` in batches of the same size, parses every message with the same
parser and limits (integrations.email.parsing), and writes each batch's ticket rows and
inbound-e-mail ledger rows with plain psycopg (``executemany``), one transaction per batch
(bench/persist.py). ``sync_email`` also takes the mailbox lease, keeps each original
(.eml.gz), stores attachments, threads replies, and marks each batch ``\\Seen`` after its
commit. Rounds alternate baseline and project; the ratio is of the medians.

    python -m bench.bench_email          # or: make bench (every benchmark)

Needs root, the dovecot binary (as the Dovecot test fixture does) and PostgreSQL: with
DATABASE_URL=postgresql://… a throwaway database ``bench_<name>`` on that server, created
and dropped by the run. The broker is a throwaway ``filesystem://`` folder.
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

MESSAGES = 2000
REPEATS = 3
# Every 20th message has a small attachment, every 10th is HTML-only.
ATTACHMENT_EVERY = 20
HTML_EVERY = 10


def _setup_django(tmp: Path) -> str:
    """Django on a throwaway database and broker (bench.common); returns the database."""
    # DEBUG goes off after start-up: the loopback Dovecot speaks plain IMAP on 127.0.0.1.
    os.environ["ZENITH_IMAP_ALLOW_PLAINTEXT"] = "1"
    os.environ["ZENITH_IMAP_ALLOW_PRIVATE_HOSTS"] = "1"
    # The production log format (settings pick it when DEBUG is off): JSON lines.
    os.environ.setdefault("ZENITH_LOG_FORMAT", "json")
    return setup_django(tmp, name="email")


def _messages() -> list[bytes]:
    from tests.support import email_samples as samples

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


def _mailbox(server: Any, username: str, password: str, slug: str) -> Any:
    """A fresh organization and its mailbox on the benchmark folder (outside the timing)."""
    from integrations.email import services as email_services
    from tickets.services import organization_get_or_create

    organization, _ = organization_get_or_create(slug=slug)
    return email_services.mailbox_create(
        organization=organization,
        name="bench",
        host=server.host,
        port=server.port,
        security="none",
        username=username,
        password=password,
    )


def _persisting_loop(server: Any, username: str, password: str, index: int) -> float:
    """Messages per second of imapclient fetch + parse + psycopg inserts of the same rows."""
    from imapclient import IMAPClient

    from bench.persist import RowWriter, connect
    from integrations.email.parsing import parse_message
    from integrations.email.services import FETCH_BATCH_MESSAGES
    from integrations.email.services.ingest import email_message_key, email_parse_limits
    from integrations.models import InboundEmail
    from tickets.models import Ticket

    mailbox = _mailbox(server, username, password, f"floor-{index}")
    tickets, ledger = RowWriter(Ticket), RowWriter(InboundEmail)
    limits = email_parse_limits()
    conn = connect()
    started = time.perf_counter()
    count = 0
    client = IMAPClient(server.host, port=server.port, ssl=False, timeout=30)
    try:
        client.login(username, password)
        uidvalidity = client.select_folder("INBOX")[b"UIDVALIDITY"]
        uids = sorted(client.search(["UID", "1:*"]))
        for start in range(0, len(uids), FETCH_BATCH_MESSAGES):
            data = client.fetch(uids[start : start + FETCH_BATCH_MESSAGES], ["BODY.PEEK[]"])
            batch = []
            for uid, item in sorted(data.items()):
                raw = item[b"BODY[]"]
                batch.append((uid, raw, parse_message(raw, limits)))
            with conn.transaction(), conn.cursor() as cur:
                ids = tickets.insert(
                    cur,
                    [
                        {
                            "organization_id": mailbox.organization_id,
                            "source": "email",
                            "external_id": email_message_key(parsed.message_id, raw),
                            "subject": parsed.subject[:500],
                            "body": parsed.body_text,
                            "requester": _requester(parsed),
                        }
                        for _, raw, parsed in batch
                    ],
                )
                ledger.insert(
                    cur,
                    [
                        {
                            "organization_id": mailbox.organization_id,
                            "mailbox_id": mailbox.pk,
                            "uidvalidity": uidvalidity,
                            "uid": uid,
                            "message_id": (parsed.message_id or "")[:998],
                            "message_key": email_message_key(parsed.message_id, raw),
                            "state": "ticket",
                            "subject": parsed.subject[:500],
                            "from_address": parsed.from_address[:320],
                            "sent_at": parsed.date,
                            "size": len(raw),
                            "body_truncated": parsed.body_truncated,
                            "ticket_id": ticket_id,
                        }
                        for (uid, raw, parsed), ticket_id in zip(batch, ids, strict=True)
                    ],
                )
            count += len(batch)
    finally:
        client.logout()
        elapsed = time.perf_counter() - started
        conn.close()
    written = Ticket.objects.filter(organization_id=mailbox.organization_id).count()
    assert count == written == MESSAGES, (count, written)
    return count / elapsed


def _requester(parsed: Any) -> str:
    """A ticket's requester as the project writes it ("Name <address>")."""
    if parsed.from_name and parsed.from_address:
        return f"{parsed.from_name} <{parsed.from_address}>"[:255]
    return (parsed.from_address or parsed.from_name)[:255]


def _zenith_sync(server: Any, username: str, password: str, index: int) -> float:
    """Tickets per second of `manage.py sync_email --org` for a fresh organization."""
    from django.core.management import call_command

    from tickets.models import Ticket

    mailbox = _mailbox(server, username, password, f"bench-{index}")
    started = time.perf_counter()
    call_command("sync_email", "--org", mailbox.organization.slug, stdout=StringIO())
    elapsed = time.perf_counter() - started
    created = Ticket.objects.filter(organization=mailbox.organization).count()
    assert created == MESSAGES, created
    return created / elapsed


def _spread(values: list[float]) -> str:
    return "-".join(f"{v:.0f}" for v in sorted(values))


def run() -> list[dict[str, Any]]:
    from tests.support.dovecot import DovecotServer, find_dovecot

    binary = find_dovecot()
    if binary is None or os.geteuid() != 0:
        return [{"name": "email_sync_throughput", "note": "skipped: needs root and dovecot"}]
    with tempfile.TemporaryDirectory(prefix="zenith-bench-email-") as name:
        database = _setup_django(Path(name))
        if database != "postgresql":
            return [{"name": "email_sync_throughput", "note": "skipped: needs PostgreSQL"}]

        server = DovecotServer(binary=binary)
        server.start()
        baselines, values = [], []
        try:
            username, password = _fill(server)
            # Warm-up: imports, Dovecot's caches.
            _persisting_loop(server, username, password, 99)
            for i in range(REPEATS):
                baselines.append(_persisting_loop(server, username, password, i))
                values.append(_zenith_sync(server, username, password, i))
        finally:
            server.cleanup()
            teardown_django("postgresql")
    baseline, value = statistics.median(baselines), statistics.median(values)
    return [
        {
            "name": "email_sync_throughput",
            "value": round(value, 1),
            "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3),
            "unit": "tickets/s",
            "note": (
                f"sync_email vs imapclient fetch + the same parse + each batch's ticket and "
                f"inbound-e-mail rows by psycopg executemany (one transaction per batch); "
                f"{MESSAGES} messages (1/{HTML_EVERY} HTML-only, 1/{ATTACHMENT_EVERY} with 2 "
                f"attachments), fetch batch {_batch()}, rounds alternate, median of {REPEATS} "
                f"(baseline {_spread(baselines)}, sync {_spread(values)}), {database}, "
                "loopback Dovecot"
            ),
        }
    ]


def _batch() -> int:
    from integrations.email.services import FETCH_BATCH_MESSAGES

    return FETCH_BATCH_MESSAGES


if __name__ == "__main__":
    for row in run():
        print(row)
