"""The ledger as an outbox: a queued task whose message the broker lost is published again,
and a second copy of a message never runs a task twice."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from taskops import services
from taskops.models import TaskRecord, TaskState
from taskops.tasks import diagnostic_fail, noop
from tests.support.services import missing, redis_available
from zenith.celery import app


@pytest.fixture
def redis_broker(settings) -> None:
    if not settings.CELERY_BROKER_URL.startswith("redis://") or not redis_available(
        settings.CELERY_BROKER_URL
    ):
        missing("Redis as the broker (CELERY_BROKER_URL=redis://...)")


def _queued_ids(queue: str = "default") -> list[str]:
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        raw = [
            item
            for priority in channel.priority_steps
            for item in channel.client.lrange(channel._q_for_pri(queue, priority), 0, -1)
        ]
    return [json.loads(item)["headers"]["id"] for item in raw]


def _lose(task_id: str, queue: str = "default") -> None:
    """Drop one message from the broker, as a failover drops writes not yet replicated."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for priority in channel.priority_steps:
            key = channel._q_for_pri(queue, priority)
            for item in channel.client.lrange(key, 0, -1):
                if json.loads(item)["headers"]["id"] == task_id:
                    channel.client.lrem(key, 1, item)


def _age(task_id: str, seconds: float) -> None:
    past = timezone.now() - timedelta(seconds=seconds)
    TaskRecord.objects.filter(task_id=task_id).update(queued_at=past, updated_at=past)


@pytest.mark.django_db(transaction=True)
def test_a_queued_task_the_broker_lost_is_published_again_once(redis_broker, organization):
    lost = services.task_enqueue(
        name="taskops.tasks.noop", kwargs={"organization_id": organization.pk}
    )
    kept = services.task_enqueue(name="taskops.tasks.noop", kwargs={})
    fresh = services.task_enqueue(name="taskops.tasks.noop", kwargs={})
    _lose(lost)
    _lose(fresh)
    _age(lost, 600)
    _age(kept, 600)
    assert _queued_ids() == [kept]

    outcome = services.task_records_republish_lost(grace_seconds=60)

    # The lost one is back under its own id, with its arguments and organization; the one
    # still queued is not doubled; the one lost a moment ago waits out the grace period.
    assert outcome == {"checked": 2, "republished": 1}
    assert sorted(_queued_ids()) == sorted([kept, lost])
    record = TaskRecord.objects.get(task_id=lost)
    assert record.state == TaskState.PENDING
    assert record.organization_id == organization.pk
    assert record.kwargs == {"organization_id": organization.pk}
    assert TaskRecord.objects.count() == 3
    # A second sweep within the grace period does not publish it a second time.
    _lose(lost)
    assert services.task_records_republish_lost(grace_seconds=60)["republished"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_task_a_worker_took_is_published_again_only_once_it_held_it_too_long(redis_broker):
    task_id = services.task_enqueue(name="taskops.tasks.noop", kwargs={})
    _age(task_id, 600)
    with app.connection_for_write() as conn:
        # Taken and not acked, as by a worker: the message moves to the unacked hash.
        held = conn.default_channel.basic_get("default", no_ack=False)
        assert held is not None
        try:
            assert _queued_ids() == []
            assert services.task_records_republish_lost(grace_seconds=60)["republished"] == 0

            time.sleep(1.2)  # the worker has held it past a 1 s grace: it lost it
            outcome = services.task_records_republish_lost(grace_seconds=1)
        finally:
            held.ack()

    assert outcome == {"checked": 1, "republished": 1}
    assert _queued_ids() == [task_id]


@pytest.mark.django_db(transaction=True)
def test_tasks_started_finished_or_due_later_are_not_published_again(redis_broker, make_record):
    old = timezone.now() - timedelta(hours=1)
    for state in (TaskState.STARTED, TaskState.SUCCESS, TaskState.RETRY, TaskState.REVOKED):
        make_record(state=state, queued_at=old)
    make_record(queued_at=old, eta=timezone.now() + timedelta(hours=1))

    assert services.task_records_republish_lost(grace_seconds=60) == {
        "checked": 0,
        "republished": 0,
    }
    assert _queued_ids() == []


@pytest.mark.django_db(transaction=True)
def test_a_second_copy_of_a_finished_task_does_nothing():
    task_id = str(uuid.uuid4())
    first = noop.apply(task_id=task_id, kwargs={})
    finished = TaskRecord.objects.get(task_id=task_id).finished_at

    second = noop.apply(task_id=task_id, kwargs={})

    assert first.state == "SUCCESS"
    assert second.state == "IGNORED"
    record = TaskRecord.objects.get(task_id=task_id)
    assert (record.state, record.finished_at) == (TaskState.SUCCESS, finished)


@pytest.mark.django_db(transaction=True)
def test_a_failed_task_is_not_run_again_by_a_second_copy():
    task_id = str(uuid.uuid4())
    diagnostic_fail.apply(task_id=task_id, kwargs={"permanent": True})

    again = diagnostic_fail.apply(task_id=task_id, kwargs={"permanent": True})

    assert again.state == "IGNORED"
    record = TaskRecord.objects.get(task_id=task_id)
    assert record.state == TaskState.FAILURE
    assert len(record.attempts) == 1
