"""The ledger in the admin: filters, search, read-only rows, Retry and Cancel, run now."""

from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages
from django_celery_beat.models import IntervalSchedule

from taskops.models import TaskRecord, TaskState
from tests.taskops.factories import PeriodicTaskFactory, TaskResultFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/taskops/taskrecord/"


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_ledger_lists_filters_and_finds_tasks(admin_client, make_record, organization):
    failed = make_record(organization=organization, state=TaskState.FAILURE, name="a.failing")
    done = make_record(organization=organization, state=TaskState.SUCCESS, name="a.working")

    page = admin_client.get(CHANGELIST).content.decode()
    assert failed.task_id in page
    assert done.task_id in page

    filtered = admin_client.get(CHANGELIST, {"state__exact": "FAILURE"}).content.decode()
    assert failed.task_id in filtered
    assert done.task_id not in filtered
    by_name = admin_client.get(CHANGELIST, {"name": "a.working"}).content.decode()
    assert done.task_id in by_name
    assert failed.task_id not in by_name
    found = admin_client.get(CHANGELIST, {"q": done.task_id}).content.decode()
    assert done.task_id in found
    assert failed.task_id not in found
    for query in ({"organization__id__exact": organization.pk}, {"queue": "default"}):
        assert admin_client.get(CHANGELIST, query).status_code == 200


def test_a_ledger_row_is_read_only_and_links_its_result_row(admin_client, make_record):
    record = make_record(state=TaskState.SUCCESS, kwargs={"organization_id": 7})
    result = TaskResultFactory(task_id=record.task_id, status="SUCCESS")

    page = admin_client.get(f"{CHANGELIST}{record.pk}/change/").content.decode()

    assert 'name="_save"' not in page
    assert f"/admin/django_celery_results/taskresult/{result.pk}/change/" in page
    assert "organization_id" in page
    response = admin_client.post(f"{CHANGELIST}{record.pk}/change/", {"state": "FAILURE"})
    assert response.status_code == 403
    record.refresh_from_db()
    assert record.state == TaskState.SUCCESS
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403


def test_retry_and_cancel_actions_report_each_outcome(
    admin_client, superuser, make_record, organization, django_capture_on_commit_callbacks
):
    failed = make_record(organization=organization, state=TaskState.FAILURE, kwargs={"x": 1})
    done = make_record(organization=organization, state=TaskState.SUCCESS)
    queued = make_record(organization=organization, state=TaskState.PENDING)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            CHANGELIST,
            {"action": "retry_tasks", "_selected_action": [failed.pk, done.pk]},
            follow=True,
        )
    notes = messages_of(response)
    retry = TaskRecord.objects.get(retry_of=failed.task_id)
    assert retry.kwargs == {"x": 1}
    assert retry.triggered_by == f"user:{superuser.pk}"
    assert any(f"{failed.task_id} retried as {retry.task_id}" in note for note in notes)
    assert any(f"{done.task_id} not retried" in note and "SUCCESS" in note for note in notes)

    response = admin_client.post(
        CHANGELIST,
        {"action": "cancel_tasks", "_selected_action": [queued.pk, done.pk]},
        follow=True,
    )
    notes = messages_of(response)
    queued.refresh_from_db()
    assert queued.state == TaskState.REVOKED
    assert queued.revoked_by == f"user:{superuser.pk}"
    assert any(f"{queued.task_id} cancelled" in note for note in notes)
    assert any(f"{done.task_id} not cancelled" in note for note in notes)


def test_run_now_on_a_schedule_records_who_ran_it(
    admin_client, superuser, django_capture_on_commit_callbacks
):
    periodic = PeriodicTaskFactory(
        name="noop every hour",
        task="taskops.tasks.noop",
        kwargs=json.dumps({"organization_id": 5}),
        interval__every=1,
        interval__period=IntervalSchedule.HOURS,
    )

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/django_celery_beat/periodictask/",
            {"action": "run_tasks", "_selected_action": [periodic.pk]},
            follow=True,
        )

    record = TaskRecord.objects.get(name="taskops.tasks.noop")
    assert record.kwargs == {"organization_id": 5}
    assert record.organization_id == 5
    assert record.triggered_by == f"user:{superuser.pk}"
    assert any(record.task_id in note for note in messages_of(response))
