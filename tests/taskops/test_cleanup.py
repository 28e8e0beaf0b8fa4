"""cleanup_old_task_results and cleanup_failed_tasks on a few thousand rows."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_results.models import TaskResult

from taskops import services
from taskops.models import TaskRecord, TaskState
from taskops.tasks import cleanup_failed_tasks, cleanup_old_task_results
from tests.taskops.factories import TaskResultFactory

pytestmark = pytest.mark.django_db


def add_records(count: int, *, age: timedelta, **fields) -> None:
    queued = timezone.now() - age
    TaskRecord.objects.bulk_create(
        [
            TaskRecord(
                task_id=str(uuid.uuid4()),
                name="taskops.tasks.noop",
                state=fields.get("state", TaskState.SUCCESS),
                queued_at=queued,
                updated_at=fields.get("updated_at", queued),
                eta=fields.get("eta"),
            )
            for _ in range(count)
        ],
        batch_size=1000,
    )


def add_results(count: int, *, age: timedelta) -> None:
    TaskResult.objects.bulk_create(
        [TaskResult(task_id=str(uuid.uuid4()), status="SUCCESS") for _ in range(count)],
        batch_size=1000,
    )
    # date_done is auto_now: move the rows just made into the past.
    TaskResult.objects.filter(date_done__gt=timezone.now() - timedelta(minutes=1)).update(
        date_done=timezone.now() - age
    )


def test_old_ledger_rows_and_expired_results_are_deleted_in_batches(settings):
    settings.ZENITH_TASK_RETENTION_DAYS = 30
    add_records(2500, age=timedelta(days=31))
    add_records(40, age=timedelta(days=29))
    add_results(1200, age=timedelta(hours=2))  # results expire after an hour
    fresh = TaskResultFactory(status="SUCCESS")

    with CaptureQueriesContext(connection) as queries:
        counts = services.task_records_cleanup(batch_size=500)

    # Other apps' registered cleanups run too (integrations: e-mail originals past retention).
    assert counts == {"ledger": 2500, "results": 1200, "group_results": 0, "raw_mail": 0}
    assert TaskRecord.objects.count() == 40
    assert list(TaskResult.objects.values_list("pk", flat=True)) == [fresh.pk]
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    # Never more than a batch of ids in memory; one DELETE per batch.
    assert selects
    assert all(re.search(r"LIMIT 500\b", sql) for sql in selects)
    assert len(deletes) == 5 + 3  # 2500 / 500 ledger batches, 1200 / 500 result batches


def test_the_cleanup_task_uses_the_retention_setting(settings):
    settings.ZENITH_TASK_RETENTION_DAYS = 3
    add_records(5, age=timedelta(days=4))
    add_records(3, age=timedelta(days=2))

    assert cleanup_old_task_results()["ledger"] == 5

    assert TaskRecord.objects.count() == 3


def test_tasks_stuck_for_over_a_day_become_failures():
    day_ago = timedelta(hours=25)
    for state in (TaskState.PENDING, TaskState.STARTED, TaskState.PROGRESS):
        add_records(1000, age=day_ago, state=state)
    add_records(10, age=timedelta(hours=2), state=TaskState.STARTED)  # recent: still running
    add_records(7, age=day_ago, state=TaskState.SUCCESS)
    add_records(4, age=day_ago, state=TaskState.RETRY)
    # Queued a day ago with a countdown that has not run out: waiting, not stuck.
    add_records(2, age=day_ago, state=TaskState.PENDING, eta=timezone.now() + timedelta(hours=1))

    counts = cleanup_failed_tasks()

    assert counts == {"PENDING": 1000, "STARTED": 1000, "PROGRESS": 1000}
    failed = TaskRecord.objects.filter(state=TaskState.FAILURE)
    assert failed.count() == 3000
    assert failed.filter(error__startswith="stuck in STARTED for over 24 hours").count() == 1000
    assert not failed.filter(finished_at=None).exists()
    assert TaskRecord.objects.filter(state=TaskState.STARTED).count() == 10
    assert TaskRecord.objects.filter(state=TaskState.PENDING).count() == 2
    assert TaskRecord.objects.filter(state=TaskState.SUCCESS).count() == 7


def test_batches_walking_the_queue_time_delete_exactly_the_expired_rows(settings):
    settings.ZENITH_TASK_RETENTION_DAYS = 30
    # Ages spread over the cutoff, several rows per timestamp, so that ties straddle batches.
    for days in (400, 200, 90, 45, 31):
        add_records(5, age=timedelta(days=days))
    add_records(4, age=timedelta(days=29))
    add_records(3, age=timedelta(hours=1))
    kept = set(TaskRecord.objects.filter(queued_at__gte=timezone.now() - timedelta(days=30)))

    with CaptureQueriesContext(connection) as queries:
        counts = services.task_records_cleanup(batch_size=3)

    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert counts["ledger"] == 25
    assert set(TaskRecord.objects.all()) == kept
    assert len([sql for sql in deletes if "taskops_taskrecord" in sql]) == 9  # ceil(25 / 3)
