"""The tasks/... API: who may see and do what, lists, filters and state conflicts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from taskops.models import TaskRecord, TaskState

pytestmark = pytest.mark.django_db

ENDPOINTS = [
    ("get", "/api/v1/tasks/status/{task_id}"),
    ("get", "/api/v1/tasks/organization/{org_id}"),
    ("get", "/api/v1/tasks/active"),
    ("post", "/api/v1/tasks/cancel/{task_id}"),
    ("post", "/api/v1/tasks/retry/{task_id}"),
    ("get", "/api/v1/tasks/health"),
]


@pytest.fixture
def failed(make_record, organization):
    return make_record(
        organization=organization,
        name="taskops.tasks.diagnostic_fail",
        state=TaskState.FAILURE,
        args=[3],
        kwargs={"failures": 9, "organization_id": organization.pk},
        error="TransientError: diagnostic transient failure 4 of 9",
    )


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("slash", ["", "/"])
def test_anonymous_callers_are_refused(client, failed, organization, method, path, slash):
    url = path.format(task_id=failed.task_id, org_id=organization.pk) + slash

    response = getattr(client, method)(url)

    assert response.status_code in (401, 403)
    failed.refresh_from_db()
    assert failed.state == TaskState.FAILURE


@pytest.mark.parametrize(("method", "path"), [e for e in ENDPOINTS if "{" in e[1]], ids=lambda v: v)
def test_another_organizations_task_is_404(
    make_api_client, outsider, failed, organization, method, path
):
    url = path.format(task_id=failed.task_id, org_id=organization.pk)

    response = getattr(make_api_client(outsider), method)(url)

    assert response.status_code == 404
    failed.refresh_from_db()
    assert failed.state == TaskState.FAILURE
    assert not TaskRecord.objects.filter(retry_of=failed.task_id).exists()


def test_another_organizations_tasks_are_not_active_for_me(
    make_api_client, outsider, make_record, organization
):
    mine = make_record(organization=outsider.memberships.get().organization)
    make_record(organization=organization)

    body = make_api_client(outsider).get("/api/v1/tasks/active").json()

    assert [task["task_id"] for task in body["results"]] == [mine.task_id]


def test_a_viewer_reads_but_cannot_cancel_or_retry(
    make_api_client, viewer, failed, make_record, organization
):
    pending = make_record(organization=organization)
    client = make_api_client(viewer)

    assert client.get(f"/api/v1/tasks/status/{failed.task_id}").status_code == 200
    assert client.get(f"/api/v1/tasks/organization/{organization.pk}").status_code == 200
    assert client.get("/api/v1/tasks/active").status_code == 200
    assert client.post(f"/api/v1/tasks/cancel/{pending.task_id}").status_code == 403
    assert client.post(f"/api/v1/tasks/retry/{failed.task_id}").status_code == 403

    pending.refresh_from_db()
    assert pending.state == TaskState.PENDING
    assert not TaskRecord.objects.filter(retry_of=failed.task_id).exists()


def test_status_shows_everything_about_a_task(api_client, failed, organization):
    failed.attempts = [{"attempt": 1, "error": "TransientError: x", "traceback": "Traceback"}]
    failed.retries = 3
    failed.triggered_by = "beat:Slack sync"
    failed.save()

    body = api_client.get(f"/api/v1/tasks/status/{failed.task_id}/").json()

    assert body["task_id"] == failed.task_id
    assert body["name"] == "taskops.tasks.diagnostic_fail"
    assert body["state"] == "FAILURE"
    assert (body["organization"], body["organization_slug"]) == (organization.pk, "acme")
    assert body["args"] == [3]
    assert body["kwargs"] == {"failures": 9, "organization_id": organization.pk}
    assert body["error"].startswith("TransientError")
    assert body["retries"] == 3
    assert body["attempts"][0]["error"] == "TransientError: x"
    assert body["triggered_by"] == "beat:Slack sync"
    assert body["retry_of"] == ""
    assert body["retried_as"] == []
    for stamp in ("queued_at", "started_at", "finished_at", "runtime", "progress", "result"):
        assert stamp in body


def test_an_operator_retries_a_failure_with_the_same_arguments(
    api_client, user, failed, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(f"/api/v1/tasks/retry/{failed.task_id}")

    assert response.status_code == 202
    new = TaskRecord.objects.get(task_id=response.json()["task_id"])
    assert new.state == TaskState.PENDING
    assert (new.name, new.args, new.kwargs) == (failed.name, failed.args, failed.kwargs)
    assert new.retry_of == failed.task_id
    assert new.organization_id == failed.organization_id
    assert new.triggered_by == f"user:{user.pk}"


@pytest.mark.parametrize(
    "state", [TaskState.SUCCESS, TaskState.PENDING, TaskState.STARTED, TaskState.PROGRESS]
)
def test_retrying_a_success_or_a_running_task_is_a_conflict(
    api_client, make_record, organization, state
):
    record = make_record(organization=organization, state=state)

    response = api_client.post(f"/api/v1/tasks/retry/{record.task_id}")

    assert response.status_code == 409
    assert state in response.json()["detail"]
    assert not TaskRecord.objects.filter(retry_of=record.task_id).exists()


def test_an_operator_cancels_a_queued_task_once(api_client, user, make_record, organization):
    record = make_record(organization=organization, name="taskops.tasks.diagnostic_sleep")

    response = api_client.post(f"/api/v1/tasks/cancel/{record.task_id}")

    assert response.status_code == 202
    record.refresh_from_db()
    assert record.state == TaskState.REVOKED
    assert record.revoked_by == f"user:{user.pk}"
    assert record.finished_at is not None
    again = api_client.post(f"/api/v1/tasks/cancel/{record.task_id}")
    assert again.status_code == 409


def test_tasks_without_an_organization_are_for_staff(
    make_api_client, user, make_user, superuser, make_record
):
    cleanup = make_record(name="taskops.tasks.cleanup_old_task_results", organization=None)
    url = f"/api/v1/tasks/status/{cleanup.task_id}"
    staff = make_user(username="stella", is_staff=True)

    assert make_api_client(user).get(url).status_code == 404
    assert make_api_client(staff).get(url).status_code == 200
    assert make_api_client(superuser).get(url).status_code == 200


def test_a_superuser_sees_every_organization(
    make_api_client, superuser, make_record, organization, other_organization
):
    theirs = make_record(organization=other_organization)

    client = make_api_client(superuser)

    assert client.get(f"/api/v1/tasks/status/{theirs.task_id}").status_code == 200
    listed = client.get(f"/api/v1/tasks/organization/{other_organization.pk}").json()
    assert [t["task_id"] for t in listed["results"]] == [theirs.task_id]


def test_organization_list_is_newest_first_paginated_and_filtered(
    api_client, make_record, organization, other_organization
):
    now = timezone.now()
    for minutes in range(60):
        make_record(
            organization=organization,
            state=TaskState.SUCCESS if minutes % 3 else TaskState.FAILURE,
            name="taskops.tasks.noop" if minutes % 2 else "taskops.tasks.diagnostic_fail",
            queued_at=now - timedelta(minutes=minutes),
        )
    make_record(organization=other_organization)
    url = f"/api/v1/tasks/organization/{organization.pk}"

    first = api_client.get(url).json()
    assert first["count"] == 60
    assert len(first["results"]) == 50
    stamps = [t["queued_at"] for t in first["results"]]
    assert stamps == sorted(stamps, reverse=True)
    assert len(api_client.get(first["next"]).json()["results"]) == 10

    failures = api_client.get(url, {"state": "FAILURE"}).json()
    assert failures["count"] == 20
    assert {t["state"] for t in failures["results"]} == {"FAILURE"}
    both = api_client.get(url, {"state": "failure,success", "name": "taskops.tasks.noop"}).json()
    assert both["count"] == 30
    assert api_client.get(f"/api/v1/tasks/organization/{organization.slug}/").json()["count"] == 60

    bad = api_client.get(url, {"state": "EXPLODED"})
    assert bad.status_code == 400
    assert "state" in bad.json()


def test_active_lists_queued_and_running_tasks_with_what_workers_said(
    api_client, make_record, organization
):
    queued = make_record(organization=organization, state=TaskState.PENDING)
    running = make_record(organization=organization, state=TaskState.STARTED, worker="w@h")
    make_record(organization=organization, state=TaskState.SUCCESS)

    body = api_client.get("/api/v1/tasks/active").json()

    assert [t["task_id"] for t in body["results"]] == [queued.task_id, running.task_id]
    assert body["workers"]["asked"] is True
    assert body["workers"]["answered"] == []  # no worker runs in this test
    assert all(t["on_worker"] is None for t in body["results"])
