"""The ledger against real worker processes: publish, run, progress, cancel, retry."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest
from django.db import transaction
from django_celery_results.models import TaskResult

from taskops import services
from taskops.models import TaskRecord, TaskState
from tests.taskops.helpers import wait_for, wait_for_state
from zenith.celery import app

# Each test starts real worker processes.
pytestmark = pytest.mark.slow


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie or a vanished process does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Rollback(Exception):
    pass


def _publish_in_a_transaction_that_rolls_back(organization_id: int) -> str:
    published = []
    try:
        with transaction.atomic():
            result = app.send_task(
                "taskops.tasks.noop", kwargs={"organization_id": organization_id}
            )
            published.append(result.id)
            raise Rollback
    except Rollback:
        pass
    return published[0]


def test_task_published_without_a_worker_is_pending_then_runs(processes, organization, user):
    task_id = services.task_enqueue(
        name="taskops.tasks.diagnostic_sleep",
        kwargs={"seconds": 1.5, "organization_id": organization.pk, "note": ["a", 1]},
        triggered_by=services.triggered_by_label(user),
    )
    # Published inside a transaction that rolls back: the message is out, the row is not.
    rolled_back = _publish_in_a_transaction_that_rolls_back(organization.pk)

    pending = TaskRecord.objects.get(task_id=task_id)
    assert pending.state == TaskState.PENDING
    assert pending.organization_id == organization.pk
    assert pending.kwargs == {"seconds": 1.5, "organization_id": organization.pk, "note": ["a", 1]}
    assert pending.args == []
    assert pending.queue == "default"
    assert pending.triggered_by == f"user:{user.pk}"
    assert not TaskRecord.objects.filter(task_id=rolled_back).exists()

    worker = processes.worker(worker_type="general", concurrency=2)

    started = wait_for_state(task_id, TaskState.STARTED, TaskState.PROGRESS, timeout=30)
    assert started.worker == worker.hostname
    assert started.started_at is not None
    progressed = wait_for_state(task_id, TaskState.PROGRESS, TaskState.SUCCESS)
    done = wait_for_state(task_id, TaskState.SUCCESS)
    assert progressed.progress is not None
    assert done.progress == {"done": 2, "total": 2, "message": "done"}
    assert done.result["slept"] >= 1.5
    assert done.runtime >= 1.5
    assert done.finished_at > done.started_at > done.queued_at

    # The worker wrote the missing row from the message: organization and trigger included.
    recovered = wait_for_state(rolled_back, TaskState.SUCCESS)
    assert recovered.organization_id == organization.pk
    assert recovered.triggered_by == "system"
    assert recovered.worker == worker.hostname


def test_cancel_terminates_a_running_task(processes, organization, user, api_client):
    worker = processes.worker(worker_type="general", concurrency=1)
    pool_before = set(worker.children())
    assert pool_before
    task_id = services.task_enqueue(
        name="taskops.tasks.diagnostic_sleep",
        kwargs={"seconds": 120, "organization_id": organization.pk},
    )
    wait_for_state(task_id, TaskState.PROGRESS)
    active = api_client.get("/api/v1/tasks/active").json()
    assert active["workers"]["answered"] == [worker.hostname]
    [listed] = [task for task in active["results"] if task["task_id"] == task_id]
    assert (listed["on_worker"], listed["worker_state"]) == (worker.hostname, "active")

    response = api_client.post(f"/api/v1/tasks/cancel/{task_id}")

    assert response.status_code == 202, response.content
    assert response.json()["state"] == "REVOKED"
    row = wait_for(
        lambda: TaskRecord.objects.filter(task_id=task_id, error__contains="terminated").first(),
        timeout=10,
        what="the worker to terminate the task",
    )
    assert row.state == TaskState.REVOKED
    assert row.revoked_by == f"user:{user.pk}"
    assert wait_for(
        lambda: TaskResult.objects.filter(task_id=task_id, status="REVOKED").exists(), timeout=10
    )
    # The pool process that ran it was killed (and a new one runs the next task).
    wait_for(
        lambda: not any(process_alive(pid) for pid in pool_before),
        timeout=10,
        what="the pool process to die",
    )
    # The worker is free again: the next task runs.
    next_id = services.task_enqueue(name="taskops.tasks.noop", kwargs={})
    wait_for_state(next_id, TaskState.SUCCESS, timeout=20)


def test_a_task_cancelled_while_no_worker_runs_never_runs(processes, organization, api_client):
    task_id = services.task_enqueue(
        name="taskops.tasks.diagnostic_sleep",
        kwargs={"seconds": 30, "organization_id": organization.pk},
    )

    response = api_client.post(f"/api/v1/tasks/cancel/{task_id}/")

    assert response.status_code == 202
    processes.worker(worker_type="general", concurrency=1)
    after = services.task_enqueue(name="taskops.tasks.noop", kwargs={})
    wait_for_state(after, TaskState.SUCCESS, timeout=30)
    row = TaskRecord.objects.get(task_id=task_id)
    assert row.state == TaskState.REVOKED
    assert row.started_at is None, "the task must not have run"
    assert row.progress is None
    assert TaskResult.objects.get(task_id=task_id).status == "REVOKED"


def _gaps(attempts: list[dict]) -> list[float]:
    times = [datetime.fromisoformat(a["failed_at"]) for a in attempts]
    return [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]


def test_retry_policy_and_retry_through_the_api(processes, organization, api_client, user):
    processes.worker(worker_type="general", concurrency=3, env={"ZENITH_RETRY_DELAYS": "1,2,1"})
    org = {"organization_id": organization.pk}
    flaky = services.task_enqueue(
        name="taskops.tasks.diagnostic_fail", kwargs={"failures": 1, **org}
    )
    broken = services.task_enqueue(
        name="taskops.tasks.diagnostic_fail", kwargs={"failures": 9, **org}
    )
    bad_data = services.task_enqueue(
        name="taskops.tasks.diagnostic_fail", kwargs={"permanent": True, **org}
    )

    permanent = wait_for_state(bad_data, TaskState.FAILURE)
    assert permanent.retries == 0
    assert [a["attempt"] for a in permanent.attempts] == [1]
    assert permanent.error.startswith("ValueError: diagnostic permanent failure")
    assert "Traceback" in permanent.traceback

    recovered = wait_for_state(flaky, TaskState.SUCCESS)
    assert recovered.retries == 1
    assert recovered.result == {"attempts": 2}
    assert [a["error"] for a in recovered.attempts] == [
        "TransientError: diagnostic transient failure 1 of 1"
    ]

    failed = wait_for_state(broken, TaskState.FAILURE, timeout=40)
    assert failed.retries == 3
    assert [a["attempt"] for a in failed.attempts] == [1, 2, 3, 4]
    assert all("TransientError" in a["error"] for a in failed.attempts)
    assert all("Traceback" in a["traceback"] for a in failed.attempts)
    assert [a["retry_at"] is not None for a in failed.attempts] == [True, True, True, False]
    # Each retry waited its configured delay (1, 2, 1 s), and not the default minutes. An
    # attempt's failure is stamped a little after its retry was published, hence the slack.
    for gap, delay in zip(_gaps(failed.attempts), [1, 2, 1], strict=True):
        assert delay - 0.2 <= gap < delay + 5, (gap, delay)

    response = api_client.post(f"/api/v1/tasks/retry/{broken}")

    assert response.status_code == 202, response.content
    new_id = response.json()["task_id"]
    assert new_id != broken
    again = wait_for_state(new_id, TaskState.STARTED, TaskState.RETRY, TaskState.PROGRESS)
    assert again.name == "taskops.tasks.diagnostic_fail"
    assert again.kwargs == {"failures": 9, **org}
    assert again.retry_of == broken
    assert again.triggered_by == f"user:{user.pk}"
    assert again.organization_id == organization.pk
    detail = api_client.get(f"/api/v1/tasks/status/{broken}").json()
    assert detail["retried_as"] == [new_id]
    # A task that succeeded, or one being retried already, is a conflict.
    assert api_client.post(f"/api/v1/tasks/retry/{flaky}").status_code == 409
    assert api_client.post(f"/api/v1/tasks/retry/{broken}").status_code == 409
