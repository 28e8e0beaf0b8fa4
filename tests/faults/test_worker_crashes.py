"""SIGKILL pool children and whole workers, then count rows: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
import redis
from django.db.models import Count
from django.utils import timezone
from django_celery_results.models import TaskResult

from mlmodels.models import Prediction
from taskops.models import RUNNING_STATES, TaskRecord, TaskState
from tests.faults.conftest import wait_until
from tests.mlmodels.conftest import unlabelled_tickets
from tests.support.services import redis_url
from zenith.celery import app

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BATCH = "mlmodels.tasks.batch_classify_tickets_task"
CLASSIFY = "mlmodels.tasks.classify_ticket_task"
SIGKILLED = "exited with 'signal 9 (SIGKILL)'"
KILLS = 10


def worker_lost(record: TaskRecord) -> int:
    return sum(1 for attempt in record.attempts or [] if attempt.get("worker_lost"))


def queue_lengths() -> int:
    """Messages waiting in every queue, at every priority (kombu: one list per step)."""
    client = redis.Redis.from_url(redis_url())
    keys = [
        queue if step == 0 else f"{queue}\x06\x16{step}"
        for queue in ("default", "ml_tasks", "sync_tasks")
        for step in (0, 3, 6, 9)
    ]
    return sum(client.llen(key) for key in keys)


def assert_one_prediction_per_ticket(trained, ids: list[int]) -> None:
    for version in trained.values():
        rows = Prediction.objects.filter(model_version=version, ticket_id__in=ids)
        assert rows.count() == len(ids)
        assert not rows.values("ticket").annotate(n=Count("id")).filter(n__gt=1).exists()
        assert set(rows.values_list("ticket_id", flat=True)) == set(ids)


def test_a_task_that_kills_its_worker_fails_after_max_redeliveries(broker, processes, settings):
    settings.ZENITH_MAX_REDELIVERIES = 3
    worker = processes.worker(
        worker_type="general", concurrency=1, env={"ZENITH_MAX_REDELIVERIES": "3"}
    )
    task_id = app.send_task("taskops.tasks.diagnostic_crash").id

    record = wait_until(
        lambda: TaskRecord.objects.filter(task_id=task_id, state=TaskState.FAILURE).first(),
        timeout=120,
    )
    # One first delivery and three redeliveries ran (and died); the fifth delivery refused.
    assert worker_lost(record) == 4
    assert record.error.startswith("RedeliveredTooOften: the worker died 4 times")
    assert TaskResult.objects.get(task_id=task_id).status == "FAILURE"
    # The message is gone for good: nothing queued, no further crash, the worker still serves.
    time.sleep(3)
    assert queue_lengths() == 0
    assert worker.log().count(SIGKILLED) == 4
    assert worker.alive()
    noop = app.send_task("taskops.tasks.noop").id
    wait_until(lambda: TaskRecord.objects.filter(task_id=noop, state=TaskState.SUCCESS).exists())
    assert TaskRecord.objects.filter(task_id=task_id, state=TaskState.FAILURE).count() == 1
    assert TaskRecord.objects.count() == 2


def test_10_pool_kills_during_a_500_ticket_batch_leave_one_prediction_each(
    organization, trained, processes, worker_env
):
    ids = [ticket.pk for ticket in unlabelled_tickets(organization, 500)]
    # This test kills the same batch KILLS times on purpose: allow more redeliveries than that.
    worker = processes.worker(
        worker_type="ml", concurrency=1, env={**worker_env, "ZENITH_MAX_REDELIVERIES": "25"}
    )
    task_id = app.send_task(
        BATCH, kwargs={"organization_id": organization.pk, "ticket_ids": ids}
    ).id
    records = TaskRecord.objects.filter(task_id=task_id)

    rng = random.Random(7)
    kills, last_kill = 0, timezone.now()
    deadline = time.monotonic() + 90
    while kills < KILLS and time.monotonic() < deadline:
        # Kill the pool child soon after each (re)delivery starts: in the middle of the batch;
        # but only once the ledger has counted the previous kill (written just after STARTED).
        running = records.filter(state__in=RUNNING_STATES, started_at__gt=last_kill).first()
        if running is not None and worker_lost(running) == kills:
            time.sleep(rng.uniform(0, 0.1))
            os.kill(worker.children()[0], signal.SIGKILL)
            kills += 1
            last_kill = timezone.now()
        time.sleep(0.02)

    record = wait_until(lambda: records.filter(state=TaskState.SUCCESS).first(), timeout=120)
    assert kills == KILLS
    assert worker_lost(record) == KILLS
    assert worker.log().count(SIGKILLED) == KILLS
    assert_one_prediction_per_ticket(trained, ids)
    assert Prediction.objects.filter(ticket_id__in=ids).count() == 500 * len(trained)
    assert records.count() == 1
    assert TaskResult.objects.get(task_id=task_id).status == "SUCCESS"
    assert worker.alive()


def test_killing_the_whole_worker_under_1000_queued_tasks_loses_none(
    organization, trained, processes, worker_env
):
    ids = [ticket.pk for ticket in unlabelled_tickets(organization, 1000)]
    # The new worker takes back what the dead one held after this many seconds.
    env = {**worker_env, "ZENITH_BROKER_VISIBILITY_TIMEOUT": "5"}
    task_ids = [
        app.send_task(CLASSIFY, kwargs={"ticket_id": pk, "organization_id": organization.pk}).id
        for pk in ids
    ]
    records = TaskRecord.objects.filter(task_id__in=task_ids)
    first = processes.worker(worker_type="ml", concurrency=2, env=env)
    wait_until(lambda: records.filter(state=TaskState.SUCCESS).count() >= 200, timeout=120)
    first.kill()
    done_by_first = records.filter(state=TaskState.SUCCESS).count()
    assert 200 <= done_by_first < 1000

    second = processes.worker(worker_type="ml", concurrency=2, env=env)
    wait_until(lambda: records.filter(state=TaskState.SUCCESS).count() == 1000, timeout=300)

    assert records.count() == 1000
    assert records.filter(state=TaskState.SUCCESS).count() == 1000
    assert_one_prediction_per_ticket(trained, ids)
    assert Prediction.objects.filter(ticket_id__in=ids).count() == 1000 * len(trained)
    # Only what the dead worker held unacked came back (prefetch 2 with concurrency 2 and
    # multiplier 1; 4 allows for a message in transit); everything else ran exactly once.
    redelivered = {record.task_id for record in records if worker_lost(record)}
    assert len(redelivered) <= 4
    # A task can finish its row and die before its ack: it runs again, harmlessly.
    by_second = records.filter(worker=second.hostname).count()
    assert 1000 - done_by_first <= by_second <= 1000 - done_by_first + len(redelivered)
    assert queue_lengths() == 0
