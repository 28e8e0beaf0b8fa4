"""Transactions of the ingestion paths whose commits need not wait for the disk.

PostgreSQL's asynchronous commit (``SET LOCAL synchronous_commit TO OFF``) returns from
COMMIT before the WAL reaches the disk. The commit is atomic and visible at once; only a
crash of the database server itself, within a fraction of a second, can lose it, and then
with every later commit (the WAL is replayed in order, so what survives is a prefix). An
ingest can take that risk for rows whose source keeps them until told otherwise: a Slack
page and its cursor (the page is read again), a mail's ledger row while the mail is not yet
``\\Seen`` or moved (the cursor, being the ledger, goes back with it). It must not tell the
source before a synchronous commit: that one flushes the WAL up to itself, and with it
every earlier asynchronous commit. A task enqueued on commit is safe too: the task ledger's
row is committed synchronously before the message is published.
https://www.postgresql.org/docs/current/wal-async-commit.html
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction


@contextmanager
def atomic_async_commit() -> Iterator[None]:
    """``transaction.atomic()`` whose COMMIT does not wait for the WAL flush (PostgreSQL).

    Only an outermost block commits asynchronously; inside a caller's transaction, or on
    another database, it is a plain ``atomic()`` and the caller's commit decides.
    """
    # Our own transaction only when none is open (atomic, or autocommit turned off).
    outermost = not connection.in_atomic_block and connection.get_autocommit()
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield
