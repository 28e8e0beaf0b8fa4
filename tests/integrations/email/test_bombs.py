"""Hostile mail through a real Dovecot: no single message stalls a mailbox (issue 14, hole 2).

The corpus (tests/support/email_bombs.py): nested ``<ol><li>`` of 32, 64 and 256 KB (html2text
took 6.7 s and 34 s on the first two and wrote 24 M and 96 M characters), nested tables,
a 5 MB newsletter, and a 40 MB message, followed by an ordinary mail. ``manage.py
sync_email`` polls them in a child process, so its peak memory (``ru_maxrss``) and its
JSON log lines (one ``email_ingested`` per message, with the time it took) are its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest

from integrations.email.parsing import TRUNCATED_MARKER
from integrations.email.services import mailbox_poll
from integrations.models import InboundEmail, Mailbox
from tests.integrations.email.conftest import MakeMailbox, append_all, ledger, seen_uids
from tests.support import email_bombs as bombs
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tests.support.workers import ROOT, process_env
from tickets.models import Organization, Role, Ticket

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

# The contract: any one message is handled (parsed and stored) in under 2 s.
PER_MESSAGE_SECONDS = 2.0
# Python allocations of one poll of the whole corpus (tracemalloc): about 85 MB here, the
# 5 MB newsletter being the largest. Downloading and parsing the 40 MB message instead of
# recording it peaks near 490 MB.
PEAK_TRACED_MB = 150

_SYNC = """
import json, resource, sys
import django
django.setup()
from django.core.management import call_command
call_command("sync_email", "--org", sys.argv[1])
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _sync_in_child(
    organization: Organization, **env_extra: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    env = process_env(
        {"ZENITH_LOG_FORMAT": "json", "DJANGO_SETTINGS_MODULE": "zenith.settings", **env_extra}
    )
    done = subprocess.run(
        [sys.executable, "-c", _SYNC, organization.slug],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    return usage, lines


@pytest.mark.django_db(transaction=True)
def test_the_bomb_corpus_is_handled_quickly_and_the_mailbox_goes_on(
    make_mailbox: MakeMailbox,
    imap_account: ImapAccount,
    organization: Organization,
    other_organization: Organization,
    make_user: Any,
    make_api_client: Any,
) -> None:
    corpus = bombs.corpus()
    corpus["huge_40m"] = bombs.huge(40 * bombs.MB)
    corpus["after_the_storm"] = samples.plain("After the storm", "Ordinary mail still arrives.\n")
    uids = dict(zip(corpus, append_all(imap_account, corpus.values()), strict=True))
    mailbox = make_mailbox(imap_account)

    usage, logs = _sync_in_child(organization)

    rows = ledger(mailbox)
    assert sorted(rows) == sorted(uids.values()), "every message has its ledger row"
    states = {name: rows[uid].state for name, uid in uids.items()}
    assert states == {**dict.fromkeys(bombs.corpus(), "ticket"), "huge_40m": "too_large"} | {
        "after_the_storm": "ticket"
    }
    # Time per message: each one's own log line, parse and store included.
    handled = {line["uid"]: line for line in logs if line.get("event") == "email_ingested"}
    assert set(handled) == set(uids.values())
    slow = {uid: line["duration_ms"] for uid, line in handled.items() if line["duration_ms"] > 2000}
    assert slow == {}, f"over {PER_MESSAGE_SECONDS} s: {slow}"
    assert usage["maxrss_kb"] > 0

    # Bodies are bounded and say so; what html2text blew up to megabytes stays small.
    for name in bombs.corpus():
        row = rows[uids[name]]
        body = row.ticket.body
        assert len(body) <= 100_000 + len(TRUNCATED_MARKER) + 2, name
        assert row.body_truncated is True, name
        assert body.endswith(TRUNCATED_MARKER), name
    assert "Spring sale on **everything**" in rows[uids["newsletter_5m"]].ticket.body
    assert rows[uids["nested_lists_32k"]].ticket.body.startswith("1. item")

    # The 40 MB message: recorded with its size and subject, not downloaded, left unread.
    huge = rows[uids["huge_40m"]]
    assert huge.size >= 40 * bombs.MB
    assert (huge.subject, huge.from_address) == ("Quarterly backup (huge)", "alice@example.com")
    assert huge.ticket is None
    assert "ZENITH_MAX_MESSAGE_BYTES" in huge.reason
    assert uids["huge_40m"] not in seen_uids(imap_account)
    assert seen_uids(imap_account) == set(uids.values()) - {uids["huge_40m"]}

    # The mailbox went on: the cursor is past everything and later mail became a ticket.
    mailbox.refresh_from_db()
    assert mailbox.last_uid == max(uids.values())
    assert mailbox.last_error == ""
    assert Ticket.objects.get(subject="After the storm").body == "Ordinary mail still arrives."

    # Visible through the API to the organization's admins, and to no one else.
    admin = make_api_client(make_user(organization=organization, role=Role.ADMIN))
    outsider = make_api_client(make_user(organization=other_organization, role=Role.ADMIN))
    url = "/api/v1/integrations/inbound-emails"
    listed = admin.get(url, {"mailbox": mailbox.pk, "state": "too_large"}).json()["results"]
    assert [(r["uid"], r["subject"], r["size"]) for r in listed] == [
        (uids["huge_40m"], "Quarterly backup (huge)", huge.size)
    ]
    assert admin.get(url, {"state": "nonsense"}).status_code == 400
    assert outsider.get(f"{url}/{huge.pk}").status_code == 404
    assert outsider.get(url).json()["results"] == []
    ticket = admin.get(f"/api/v1/tickets/{rows[uids['newsletter_5m']].ticket_id}").json()
    assert ticket["email"]["body_truncated"] is True


@pytest.mark.django_db
def test_the_bomb_corpus_stays_within_bounded_memory(
    mailbox: Mailbox, imap_account: ImapAccount
) -> None:
    append_all(imap_account, [*bombs.corpus().values(), bombs.huge(40 * bombs.MB)])

    tracemalloc.start()
    try:
        report = mailbox_poll(mailbox=mailbox)
        peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()

    assert (report.ticket, report.too_large, report.error) == (len(bombs.corpus()), 1, "")
    assert peak_mb < PEAK_TRACED_MB, f"peak {peak_mb:.0f} MB of Python allocations"


@pytest.mark.django_db
def test_a_message_over_the_parse_budget_is_rejected_and_the_next_one_ingested(
    mailbox: Mailbox, imap_account: ImapAccount, settings: Any
) -> None:
    settings.ZENITH_MAX_PARSE_SECONDS = 0.05
    uids = append_all(
        imap_account,
        [bombs.newsletter(5 * bombs.MB), samples.plain("Small", "Quick to parse.\n")],
    )

    report = mailbox_poll(mailbox=mailbox)

    rows = ledger(mailbox)
    slow = rows[uids[0]]
    assert slow.state == "rejected"
    assert "ZENITH_MAX_PARSE_SECONDS" in slow.reason
    # Headers alone still say what it was.
    assert slow.subject == "Newsletter 5 MB"
    assert rows[uids[1]].state == "ticket"
    assert (report.rejected, report.ticket, report.error) == (1, 1, "")
    assert mailbox.last_uid == uids[1]


@pytest.mark.django_db
def test_a_body_over_the_cap_is_cut_with_a_visible_marker(
    mailbox: Mailbox, imap_account: ImapAccount, settings: Any
) -> None:
    settings.ZENITH_MAX_BODY_CHARS = 1000
    append_all(imap_account, [samples.plain("Long", "word " * 5000), samples.plain("Short")])

    mailbox_poll(mailbox=mailbox)

    long, short = Ticket.objects.get(subject="Long"), Ticket.objects.get(subject="Short")
    assert long.body.startswith("word word")
    assert long.body.endswith("\n\n" + TRUNCATED_MARKER)
    assert len(long.body) == 1000 + 2 + len(TRUNCATED_MARKER) - 1  # "word" cut, rstripped
    assert InboundEmail.objects.get(ticket=long).body_truncated is True
    assert InboundEmail.objects.get(ticket=short).body_truncated is False
    assert TRUNCATED_MARKER not in short.body
