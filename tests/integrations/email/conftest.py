"""Fixtures of the e-mail tests: mailboxes on the real Dovecot of tests.support.dovecot."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from integrations.email import services as email_services
from integrations.models import InboundEmail, Mailbox
from tests.support.dovecot import ImapAccount
from tickets.models import Organization

PROCESSED = "Zenith/Processed"

MakeMailbox = Callable[..., Mailbox]


def append_all(
    account: ImapAccount, raws: Iterable[bytes], folder: str = "INBOX", flags: Iterable[bytes] = ()
) -> list[int]:
    """APPEND many messages over one connection; returns their UIDs in order."""
    uids = []
    with account.server.client(account.credentials) as imap:
        if not imap.folder_exists(folder):
            imap.create_folder(folder)
        for raw in raws:
            response = imap.append(folder, raw, flags=tuple(flags))
            # "[APPENDUID <validity> <uid>] ..."
            uids.append(int(response.split(b"]")[0].split()[-1]))
    return uids


def seen_uids(account: ImapAccount, folder: str = "INBOX") -> set[int]:
    """UIDs the server has flagged \\Seen."""
    return {uid for uid, flags in account.flags(folder).items() if "\\Seen" in flags}


def ledger(mailbox: Mailbox) -> dict[int, InboundEmail]:
    """{uid: ledger row} of a mailbox under its current UIDVALIDITY."""
    mailbox.refresh_from_db()
    rows = InboundEmail.objects.filter(mailbox=mailbox, uidvalidity=mailbox.uidvalidity)
    return {row.uid: row for row in rows.select_related("ticket")}


@pytest.fixture
def make_mailbox(organization: Organization) -> MakeMailbox:
    """Create a Mailbox row pointing at a Dovecot test account (plain IMAP, local only)."""
    counter = 0

    def make(
        account: ImapAccount, *, organization: Organization = organization, **kw: Any
    ) -> Mailbox:
        nonlocal counter
        counter += 1
        values: dict[str, Any] = {
            "organization": organization,
            "name": f"Support {counter}",
            "host": account.host,
            "port": account.port,
            "security": "none",
            "username": account.username,
            "password": account.password,
        }
        values.update(kw)
        return email_services.mailbox_create(**values)

    return make


@pytest.fixture
def mailbox(make_mailbox: MakeMailbox, imap_account: ImapAccount) -> Mailbox:
    """A mailbox on a fresh Dovecot account that keeps processed mail in INBOX (\\Seen)."""
    return make_mailbox(imap_account)


@pytest.fixture(autouse=True)
def _media_in_tmp(settings: Any, tmp_path: Any) -> None:
    """Attachments are written under the test's own directory, never into var/media."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
