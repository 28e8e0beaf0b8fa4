"""integrations.transactions on the real PostgreSQL: asynchronous commits, and only where asked."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from integrations.transactions import atomic_async_commit
from tests.support.services import missing

pytestmark = pytest.mark.django_db(transaction=True)


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@pytest.fixture(autouse=True)
def _postgresql() -> None:
    if connection.vendor != "postgresql":
        missing("PostgreSQL")


def test_an_outermost_block_commits_asynchronously_and_only_itself() -> None:
    before = synchronous_commit()
    assert before != "off"

    with atomic_async_commit():
        assert synchronous_commit() == "off"

    assert synchronous_commit() == before
    with transaction.atomic():
        assert synchronous_commit() == before


def test_inside_a_callers_transaction_the_caller_decides() -> None:
    before = synchronous_commit()

    with transaction.atomic(), atomic_async_commit():
        assert synchronous_commit() == before

    transaction.set_autocommit(False)
    try:
        with atomic_async_commit():
            assert synchronous_commit() == before
    finally:
        transaction.rollback()
        transaction.set_autocommit(True)


def test_a_failing_block_rolls_back_and_leaves_the_setting_alone() -> None:
    before = synchronous_commit()

    def create_then_fail() -> None:
        with atomic_async_commit(), connection.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE rolled_back_probe (id int)")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        create_then_fail()

    assert synchronous_commit() == before
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('rolled_back_probe') IS NULL")
        assert cursor.fetchone()[0] is True
