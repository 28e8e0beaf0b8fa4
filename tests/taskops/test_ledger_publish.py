"""The ledger row written on the publish path, in whichever process publishes."""

from __future__ import annotations

import pytest
from django.utils import timezone

from taskops import services
from taskops.models import TaskRecord, TaskState
from taskops.tasks import diagnostic_fail, noop
from zenith.celery import app

pytestmark = pytest.mark.django_db


@pytest.fixture
def published(django_capture_on_commit_callbacks):
    """task_enqueue, with its after-commit publish run at once; returns the ledger row."""

    def publish(**kwargs) -> TaskRecord:
        with django_capture_on_commit_callbacks(execute=True):
            task_id = services.task_enqueue(**kwargs)
        return TaskRecord.objects.get(task_id=task_id)

    return publish


def test_a_published_task_is_pending_with_its_organization_and_json_arguments(
    published, organization, user
):
    record = published(
        name="mlmodels.tasks.batch_classify_tickets_task",
        kwargs={"organization_id": organization.pk, "ticket_ids": [3, 1, 2]},
        triggered_by=services.triggered_by_label(user),
    )

    assert record.state == TaskState.PENDING
    assert record.organization_id == organization.pk
    assert record.kwargs == {"organization_id": organization.pk, "ticket_ids": [3, 1, 2]}
    assert record.args == []
    assert record.queue == "ml_tasks"
    assert record.triggered_by == f"user:{user.pk}"
    assert record.queued_at <= timezone.now()
    assert record.started_at is None


def test_the_organization_may_come_from_a_header(published, organization):
    record = published(
        name="integrations.tasks.sync_slack_tickets",
        args=[1, "x"],
        kwargs={},
        organization_id=organization.pk,
    )

    assert record.organization_id == organization.pk
    assert record.args == [1, "x"]
    assert record.queue == "sync_tasks"
    assert record.triggered_by == "system"


def test_a_task_without_an_organization_has_none(published):
    record = published(name="taskops.tasks.cleanup_old_task_results", kwargs={})

    assert record.organization is None
    assert record.queue == "default"


def test_a_countdown_is_recorded_as_eta(published):
    record = published(name="taskops.tasks.noop", kwargs={}, countdown=120)

    assert record.eta is not None
    assert 100 < (record.eta - timezone.now()).total_seconds() <= 120


def test_tasks_sent_by_beat_name_their_schedule():
    result = app.send_task(
        "taskops.tasks.health_check_tasks", headers={"periodic_task_name": "Health check heartbeat"}
    )

    assert TaskRecord.objects.get(task_id=result.id).triggered_by == "beat:Health check heartbeat"


def test_publishing_the_same_id_twice_keeps_one_row():
    first = app.send_task("taskops.tasks.noop", kwargs={"organization_id": 1}, task_id="same-id")
    app.send_task("taskops.tasks.noop", kwargs={}, task_id=first.id)

    assert TaskRecord.objects.filter(task_id="same-id").count() == 1
    assert TaskRecord.objects.get(task_id="same-id").kwargs == {"organization_id": 1}


def test_a_task_run_in_process_gets_its_row_from_the_worker_side(organization):
    result = noop.apply(kwargs={"organization_id": organization.pk})

    record = TaskRecord.objects.get(task_id=result.id)
    assert record.state == TaskState.SUCCESS
    assert record.organization_id == organization.pk
    assert record.runtime is not None


def test_a_permanent_error_fails_at_once_with_its_traceback():
    result = diagnostic_fail.apply(kwargs={"permanent": True})

    record = TaskRecord.objects.get(task_id=result.id)
    assert record.state == TaskState.FAILURE
    assert record.retries == 0
    assert record.error == "ValueError: diagnostic permanent failure on attempt 1"
    assert "raise ValueError" in record.traceback
    assert len(record.attempts) == 1
