"""Results: stored in django-celery-results' table in one statement, awaited on a Redis notice."""

from __future__ import annotations

import uuid

import pytest
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_celery_results.models import TaskResult

from taskops import services
from taskops.models import TaskRecord, TaskState
from taskops.results import notify_url
from tests.taskops.helpers import wait_for_state
from zenith.celery import app


def test_a_result_row_is_written_once_and_kept_up_to_date(db):
    task_id = str(uuid.uuid4())

    app.backend.store_result(task_id, None, "STARTED")
    started = TaskResult.objects.get(task_id=task_id)
    app.backend.store_result(task_id, {"answer": 42}, "SUCCESS")

    row = TaskResult.objects.get(task_id=task_id)
    assert row.status == "SUCCESS"
    assert row.result == '{"answer": 42}'
    assert row.date_started == started.date_started is not None
    assert row.date_created == started.date_created
    assert TaskResult.objects.filter(task_id=task_id).count() == 1


def test_a_result_stored_before_anyone_waits_is_returned_at_once(transactional_db):
    task_id = str(uuid.uuid4())
    app.backend.store_result(task_id, {"rows": 3}, "SUCCESS")

    assert AsyncResult(task_id).get(timeout=5) == {"rows": 3}


@pytest.mark.slow
def test_waiting_for_a_result_does_not_poll_the_table(processes, organization):
    if not notify_url():
        pytest.skip("result notices need Redis (REDIS_URL or a Redis broker)")
    processes.worker(worker_type="general", concurrency=1)
    task_id = services.task_enqueue(
        name="taskops.tasks.diagnostic_sleep",
        kwargs={"seconds": 1.5, "organization_id": organization.pk},
    )

    with CaptureQueriesContext(connection) as queries:
        # Polling every 2 ms for 1.5 s would read the table hundreds of times.
        value = AsyncResult(task_id).get(timeout=60, interval=0.002)

    assert value["slept"] >= 1.5
    assert len(queries) <= 5, [q["sql"] for q in queries]
    assert TaskResult.objects.get(task_id=task_id).status == "SUCCESS"
    # The ledger's SUCCESS went out with the result row.
    record = TaskRecord.objects.get(task_id=task_id)
    assert record.state == TaskState.SUCCESS
    assert record.result == value
    assert record.runtime >= 1.5


@pytest.mark.slow
def test_a_failure_reaches_the_waiter_and_both_tables(processes):
    processes.worker(worker_type="general", concurrency=1)
    task_id = services.task_enqueue(
        name="taskops.tasks.diagnostic_fail", kwargs={"permanent": True}
    )

    with pytest.raises(ValueError, match="diagnostic permanent failure on attempt 1"):
        AsyncResult(task_id).get(timeout=60)

    row = TaskResult.objects.get(task_id=task_id)
    assert row.status == "FAILURE"
    assert "raise ValueError" in row.traceback
    # The ledger's FAILURE (with attempts and traceback) is written right after the result.
    assert wait_for_state(task_id, TaskState.FAILURE).error.startswith("ValueError")


def test_a_result_whose_notice_was_lost_is_read_from_the_table(transactional_db):
    # Written while Redis was away (no notice, no key): the table is the truth.
    task_id = str(uuid.uuid4())
    TaskResult.objects.create(
        task_id=task_id,
        status="SUCCESS",
        result='{"from": "table"}',
        content_type="application/json",
        content_encoding="utf-8",
    )

    assert AsyncResult(task_id).get(timeout=10) == {"from": "table"}


def test_waiting_for_a_task_that_never_ends_times_out(transactional_db):
    with pytest.raises(CeleryTimeoutError):
        AsyncResult(str(uuid.uuid4())).get(timeout=0.3)
