"""A worker SIGKILLed again and again while syncing 500 mails: nothing lost, nothing twice."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from django.conf import settings
from django_celery_results.models import TaskResult

from integrations.models import InboundEmail, Mailbox
from taskops.services import task_enqueue
from tests.integrations.email.conftest import MakeMailbox, append_all, seen_uids
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tests.support.workers import ProcessManager
from tickets.models import Ticket

pytestmark = [pytest.mark.dovecot, pytest.mark.slow, pytest.mark.faults]

MESSAGES = 500
KILL_AT = (40, 150, 290)


def enqueue_poll(mailbox: Mailbox) -> str:
    return task_enqueue(
        name="integrations.tasks.sync_mailbox_task",
        kwargs={"mailbox_id": mailbox.pk, "organization_id": mailbox.organization_id},
    )


def assert_consistent(mailbox: Mailbox, account: ImapAccount) -> int:
    """The invariants that must hold at any instant; returns how many rows are committed."""
    # Read the server first: anything \Seen now must already have its committed row.
    seen = seen_uids(account)
    rows = dict(InboundEmail.objects.filter(mailbox=mailbox).values_list("uid", "ticket_id"))
    assert seen <= set(rows), f"\\Seen without a committed row: {sorted(seen - set(rows))}"
    tickets = Ticket.objects.filter(organization=mailbox.organization)
    assert tickets.count() == len(rows) == len(set(rows.values()))
    # The committed rows are exactly the first UIDs: no hole the cursor could skip.
    assert sorted(rows) == list(range(1, len(rows) + 1))
    return len(rows)


def forget_unacked(task_ids: list[str]) -> None:
    """Drop the killed workers' unacked Redis deliveries so no later test receives them."""
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        return  # the filesystem transport has no acks: a killed delivery is already gone
    from zenith.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        client = channel.client
        for tag, payload in client.hgetall(channel.unacked_key).items():
            message = json.loads(payload)[0]
            if message.get("headers", {}).get("id") in task_ids:
                client.hdel(channel.unacked_key, tag)
                client.zrem(channel.unacked_index_key, tag)


def test_sigkilled_worker_never_loses_or_duplicates_mail(
    processes: ProcessManager, make_mailbox: MakeMailbox, imap_account: ImapAccount, tmp_path: Path
) -> None:
    raws = [
        samples.with_attachments(subject=f"Crash {i}")
        if i % 25 == 0
        else samples.plain(f"Crash {i}", f"Mail number {i}.\n")
        for i in range(MESSAGES)
    ]
    append_all(imap_account, raws)
    mailbox = make_mailbox(imap_account)
    # The dead poll's lease is taken over at once on this host; 30 s is only the fallback.
    env = {"DJANGO_MEDIA_ROOT": str(tmp_path / "media"), "ZENITH_MAILBOX_LEASE_SECONDS": "30"}
    task_ids = []
    try:
        committed = 0
        for threshold in KILL_AT:
            worker = processes.worker(worker_type="sync", concurrency=1, env=env)
            task_ids.append(enqueue_poll(mailbox))
            deadline = time.monotonic() + 90
            while InboundEmail.objects.filter(mailbox=mailbox).count() < threshold:
                assert time.monotonic() < deadline, worker.log()[-3000:]
                time.sleep(0.01)
            worker.kill()
            now = assert_consistent(mailbox, imap_account)
            assert committed < now < MESSAGES, "the kill must land in the middle of the sync"
            committed = now

        processes.worker(worker_type="sync", concurrency=1, env=env)
        final = enqueue_poll(mailbox)
        task_ids.append(final)
        deadline = time.monotonic() + 180
        while not TaskResult.objects.filter(task_id=final, status="SUCCESS").exists():
            assert time.monotonic() < deadline, "the last poll did not finish"
            time.sleep(0.2)
    finally:
        forget_unacked(task_ids)

    # Every restarted poll took the dead one's lease over at once instead of waiting it out.
    logs = "".join(process.log() for process in processes.processes)
    assert logs.count("mailbox_lease_taken_over") == len(KILL_AT)
    assert assert_consistent(mailbox, imap_account) == MESSAGES
    assert Ticket.objects.count() == MESSAGES
    subjects = set(Ticket.objects.values_list("subject", flat=True))
    assert subjects == {f"Crash {i}" for i in range(MESSAGES)}
    assert seen_uids(imap_account) == set(range(1, MESSAGES + 1))
    assert not InboundEmail.objects.filter(flagged_at__isnull=True).exists()
    assert len(imap_account.messages()) == MESSAGES  # nothing deleted
    mailbox.refresh_from_db()
    assert (mailbox.last_uid, mailbox.sync_lease_owner) == (MESSAGES, "")
