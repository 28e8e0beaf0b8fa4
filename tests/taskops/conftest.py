"""Fixtures of the task-operations tests: people with roles, ledger rows, a clean broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskops.models import TaskRecord
from tests.taskops.factories import TaskRecordFactory
from tickets.models import Organization, Role


@pytest.fixture
def viewer(make_user: Callable[..., Any], organization: Organization) -> Any:
    return make_user(organization=organization, role=Role.VIEWER, username="victor")


@pytest.fixture
def outsider(make_user: Callable[..., Any], other_organization: Organization) -> Any:
    """An operator of the other organization."""
    return make_user(organization=other_organization, role=Role.OPERATOR, username="oscar")


@pytest.fixture
def superuser(make_user: Callable[..., Any]) -> Any:
    return make_user(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def make_record(db: None) -> Callable[..., TaskRecord]:
    """Write a ledger row directly (as the publish signal would); see TaskRecordFactory."""

    def make(**fields: Any) -> TaskRecord:
        return TaskRecordFactory(**fields)

    return make


def _purge_queues() -> None:
    from taskops.health import required_queues
    from zenith.celery import app

    with app.connection_for_write() as conn:
        for queue in required_queues():
            conn.default_channel.queue_purge(queue)


@pytest.fixture(autouse=True)
def _empty_queues() -> Iterator[None]:
    """Start each test with empty queues and leave none of its messages behind.

    A worker then sees only this test's tasks, and no later test (of any app, sharing the
    broker) runs a task this one published but never ran.
    """
    _purge_queues()
    yield
    _purge_queues()
