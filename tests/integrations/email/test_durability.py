"""Per-message commits are asynchronous: the server hears of a mail only once its row is on disk."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from django.db import connection

from integrations.email import services as email_services
from integrations.email.client import ImapMailbox
from integrations.email.services import mailbox_poll
from integrations.email.services import poll as email_poll
from integrations.models import InboundEmail, Mailbox
from tests.integrations.email.conftest import PROCESSED, MakeMailbox, append_all, seen_uids
from tests.support import email_samples as samples
from tests.support.dovecot import ImapAccount
from tests.support.services import missing

# Real commits: inside a test's transaction every commit would be the test's.
pytestmark = [pytest.mark.dovecot, pytest.mark.django_db(transaction=True)]


def wal_position() -> str:
    """Where the WAL ends now: every commit made so far lies before it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()::text")
        return str(cursor.fetchone()[0])


def flushed_past(position: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn", [position])
        return bool(cursor.fetchone()[0])


@pytest.mark.parametrize("processed_folder", ["", PROCESSED])
def test_mail_is_flagged_or_moved_only_once_its_commit_is_on_disk(
    make_mailbox: MakeMailbox,
    imap_account: ImapAccount,
    monkeypatch: pytest.MonkeyPatch,
    processed_folder: str,
) -> None:
    if connection.vendor != "postgresql":
        missing("PostgreSQL")
    monkeypatch.setattr(email_poll, "FETCH_BATCH_MESSAGES", 4)
    append_all(imap_account, [samples.plain(f"Disk {i}", f"Body {i}.\n") for i in range(10)])
    mailbox: Mailbox = make_mailbox(imap_account, processed_folder=processed_folder)
    committed: list[str] = []
    told: list[tuple[list[int], bool]] = []
    ingest = email_services.email_ingest

    def ingest_and_note(**kwargs: Any) -> InboundEmail:
        row = ingest(**kwargs)
        committed.append(wal_position())
        return row

    def noting(name: str) -> Any:
        real = getattr(ImapMailbox, name)

        def tell(self: ImapMailbox, uids: Iterable[int], *args: Any) -> None:
            uids = list(uids)
            told.append((uids, flushed_past(committed[-1])))
            real(self, uids, *args)

        return tell

    monkeypatch.setattr(email_poll, "email_ingest", ingest_and_note)
    monkeypatch.setattr(ImapMailbox, "mark_seen", noting("mark_seen"))
    monkeypatch.setattr(ImapMailbox, "move", noting("move"))

    report = mailbox_poll(mailbox=mailbox)

    assert (report.error, report.ticket, report.flagged) == ("", 10, 10)
    assert [uids for uids, _ in told] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    assert all(on_disk for _, on_disk in told)
    if processed_folder:
        assert len(imap_account.messages(PROCESSED)) == 10
    else:
        assert seen_uids(imap_account) == set(range(1, 11))
