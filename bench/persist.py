"""The persisting half of the ingestion baselines: rows written by plain psycopg.

bench_email and bench_slack compare the project's sync with "the bare client loop + the same
rows written in the same database": this module writes those rows with psycopg's
``executemany`` (``RETURNING`` the new ids), one transaction per page or fetch batch, on a
connection of its own. Table and column names come from the models, so the baseline writes
the tables the project writes; columns a row does not name get the model field's default
(``auto_now``/``auto_now_add`` columns the current time), as the ORM would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql


class RowWriter:
    """``INSERT … RETURNING id`` of many rows of one model with psycopg's ``executemany``."""

    def __init__(self, model: Any) -> None:
        from django.db import connection

        self._connection = connection
        self.fields = [
            f for f in model._meta.concrete_fields if not f.primary_key or not f.auto_created
        ]
        self.sql = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
            sql.Identifier(model._meta.db_table),
            sql.SQL(", ").join(sql.Identifier(f.column) for f in self.fields),
            sql.SQL(", ").join(sql.Placeholder() * len(self.fields)),
            sql.Identifier(model._meta.pk.column),
        )

    def _params(self, row: Mapping[str, Any], now: datetime) -> list[Any]:
        values = []
        for field in self.fields:
            if field.attname in row:
                value = row[field.attname]
            elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
                value = now
            elif field.has_default():
                value = field.get_default()
            else:
                value = None
            # JSON columns need psycopg's Jsonb wrapper; the field knows how (no ORM query).
            values.append(field.get_db_prep_value(value, self._connection, prepared=False))
        return values

    def insert(self, cursor: psycopg.Cursor[Any], rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert ``rows`` (dicts keyed by attname); returns their new ids, in order."""
        if not rows:
            return []
        now = datetime.now(UTC)
        cursor.executemany(self.sql, [self._params(row, now) for row in rows], returning=True)
        ids = []
        while True:
            ids.append(cursor.fetchone()[0])  # type: ignore[index]
            if not cursor.nextset():
                return ids


def connect() -> psycopg.Connection[Any]:
    """A psycopg connection of its own to the bench's database (bench.common.setup_django)."""
    from bench.common import database_url

    return psycopg.connect(database_url())
