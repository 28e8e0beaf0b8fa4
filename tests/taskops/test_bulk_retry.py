"""POST tasks/retry: many failed tasks again, by ids or by the search's filter (operators)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from taskops.models import TaskRecord, TaskState
from taskops.services import BULK_RETRY_CAP
from tests.taskops.helpers import wait_for_state
from tickets.models import Role

pytestmark = pytest.mark.django_db

URL = "/api/v1/tasks/retry"


@pytest.fixture
def failures(make_record, organization, other_organization):
    def failed(org, state=TaskState.FAILURE, name="taskops.tasks.noop", **kwargs):
        return make_record(organization=org, name=name, state=state, **kwargs)

    return {
        "failed": failed(organization, kwargs={"organization_id": organization.pk, "n": 1}),
        "revoked": failed(organization, state=TaskState.REVOKED, args=[2]),
        "succeeded": failed(organization, state=TaskState.SUCCESS),
        "running": failed(organization, state=TaskState.STARTED),
        "foreign_name": failed(organization, name="os.system", args=["rm -rf /"]),
        "celery_own": failed(organization, name="celery.backend_cleanup"),
        "theirs": failed(other_organization, kwargs={"n": 3}),
    }


def post(client, body, capture):
    with capture(execute=True):
        return client.post(URL, body, format="json")


def test_retry_by_ids_reports_each_task_and_records_who_and_what(
    api_client, user, failures, django_capture_on_commit_callbacks
):
    order = ["failed", "revoked", "succeeded", "running", "foreign_name", "celery_own", "theirs"]
    task_ids = [failures[name].task_id for name in order] + ["no-such-id"]

    response = post(api_client, {"task_ids": task_ids}, django_capture_on_commit_callbacks)

    assert response.status_code == 202
    body = response.json()
    retried = {row["retry_of"]: row["task_id"] for row in body["retried"]}
    assert set(retried) == {failures["failed"].task_id, failures["revoked"].task_id}
    for name in ("failed", "revoked"):
        original = failures[name]
        new = TaskRecord.objects.get(task_id=retried[original.task_id])
        assert (new.name, new.args, new.kwargs) == (original.name, original.args, original.kwargs)
        assert (new.retry_of, new.triggered_by) == (original.task_id, f"user:{user.pk}")
        assert new.organization_id == original.organization_id
    reasons = {row["task_id"]: row["reason"] for row in body["skipped"]}
    assert "SUCCESS" in reasons[failures["succeeded"].task_id]
    assert "STARTED" in reasons[failures["running"].task_id]
    assert "not a registered Zenith task" in reasons[failures["foreign_name"].task_id]
    assert "not a registered Zenith task" in reasons[failures["celery_own"].task_id]
    # Another organization's task reads exactly like one that does not exist.
    assert reasons[failures["theirs"].task_id] == reasons["no-such-id"] == "no such task"
    assert not TaskRecord.objects.filter(retry_of=failures["theirs"].task_id).exists()
    assert not TaskRecord.objects.filter(name__in=["os.system", "celery.backend_cleanup"]).exclude(
        pk__in=[failures["foreign_name"].pk, failures["celery_own"].pk]
    )
    assert (body["matched"], body["capped"]) == (6, False)


def test_retry_by_filter_defaults_to_failures_and_revocations_oldest_first(
    api_client, failures, organization, django_capture_on_commit_callbacks
):
    response = post(
        api_client,
        {"filter": {"name": "taskops.tasks.noop", "organization": organization.pk}},
        django_capture_on_commit_callbacks,
    )

    body = response.json()
    assert response.status_code == 202
    assert [row["retry_of"] for row in body["retried"]] == [
        failures["failed"].task_id,
        failures["revoked"].task_id,
    ]
    assert body["skipped"] == []


def test_retry_by_filter_with_argument_containment(
    api_client, failures, django_capture_on_commit_callbacks
):
    body = post(
        api_client,
        {"filter": {"state": ["FAILURE"], "kwargs_contains": {"n": 1}}},
        django_capture_on_commit_callbacks,
    ).json()

    assert [row["retry_of"] for row in body["retried"]] == [failures["failed"].task_id]


def test_a_filter_never_reaches_another_organization(
    make_api_client, outsider, failures, organization, django_capture_on_commit_callbacks
):
    response = post(
        make_api_client(outsider),
        {"filter": {"organization": organization.pk}},
        django_capture_on_commit_callbacks,
    )

    assert (response.status_code, response.json()["matched"]) == (200, 0)
    assert not TaskRecord.objects.exclude(retry_of="").exists()


def test_the_cap_limits_one_call_and_says_so(
    api_client, make_record, organization, django_capture_on_commit_callbacks
):
    records = [
        make_record(organization=organization, name="taskops.tasks.noop", state=TaskState.FAILURE)
        for _ in range(3)
    ]

    body = post(
        api_client, {"filter": {"state": "FAILURE"}, "limit": 2}, django_capture_on_commit_callbacks
    ).json()

    assert (body["matched"], body["capped"], len(body["retried"])) == (3, True, 2)
    assert TaskRecord.objects.exclude(retry_of="").count() == 2
    assert {row["retry_of"] for row in body["retried"]} <= {r.task_id for r in records}


def test_a_viewer_retries_nothing(
    make_api_client, make_user, organization, failures, django_capture_on_commit_callbacks
):
    viewer = make_user(organization=organization, role=Role.VIEWER, username="vera")

    response = post(
        make_api_client(viewer),
        {"task_ids": [failures["failed"].task_id]},
        django_capture_on_commit_callbacks,
    )

    assert response.status_code == 200
    assert response.json()["skipped"] == [
        {
            "task_id": failures["failed"].task_id,
            "reason": "this needs the operator role in the task's organization",
        }
    ]
    assert not TaskRecord.objects.exclude(retry_of="").exists()


def test_a_dry_run_sends_nothing(api_client, failures, django_capture_on_commit_callbacks):
    body = post(
        api_client,
        {"filter": {"state": "FAILURE"}, "dry_run": True},
        django_capture_on_commit_callbacks,
    ).json()

    assert body["would_retry"] == [failures["failed"].task_id]
    assert body["retried"] == []
    assert not TaskRecord.objects.exclude(retry_of="").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "task_ids"),
        ({"task_ids": ["a"], "filter": {"state": "FAILURE"}}, "task_ids"),
        ({"task_ids": "abc"}, "task_ids"),
        ({"task_ids": []}, "task_ids"),
        ({"task_ids": ["x"] * (BULK_RETRY_CAP + 1)}, "task_ids"),
        ({"task_ids": ["x" * 300]}, "task_ids"),
        ({"filter": {}}, "filter"),
        ({"filter": {"password": "x"}}, "filter"),
        ({"filter": {"state": "EXPLODED"}}, "filter"),
        ({"filter": {"kwargs_contains": [1]}}, "filter"),
        ({"filter": "state=FAILURE"}, "filter"),
        ({"task_ids": ["a"], "limit": BULK_RETRY_CAP + 1}, "limit"),
        ({"task_ids": ["a"], "everything": True}, "everything"),
    ],
)
def test_bad_input_answers_400_naming_the_field(api_client, failures, body, field):
    response = api_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"detail", field}
    assert field in response.json()["detail"]
    assert not TaskRecord.objects.exclude(retry_of="").exists()


def test_single_retry_refuses_a_name_that_is_not_zenith_task(api_client, failures):
    response = api_client.post(f"/api/v1/tasks/retry/{failures['foreign_name'].task_id}")

    assert response.status_code == 409
    assert "not a registered Zenith task" in response.json()["detail"]
    assert not TaskRecord.objects.exclude(retry_of="").exists()


def test_admin_retry_refuses_a_name_that_is_not_zenith_task(
    admin_client, failures, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/taskops/taskrecord/",
            {"action": "retry_tasks", "_selected_action": [failures["foreign_name"].pk]},
            follow=True,
        )

    notes = [str(message) for message in response.context["messages"]]
    assert any("not retried" in note and "not a registered Zenith task" in note for note in notes)
    assert not TaskRecord.objects.exclude(retry_of="").exists()


def test_retried_tasks_run_on_a_real_worker(
    make_api_client, make_user, organization, make_record, inthread_worker
):
    operator = make_user(organization=organization, role=Role.OPERATOR, username="opal")
    failed = [
        make_record(organization=organization, name="taskops.tasks.noop", state=TaskState.FAILURE)
        for _ in range(2)
    ]

    response = make_api_client(operator).post(
        URL, {"task_ids": [record.task_id for record in failed]}, format="json"
    )

    assert response.status_code == 202
    for row in response.json()["retried"]:
        assert wait_for_state(row["task_id"], TaskState.SUCCESS).retry_of == row["retry_of"]


@pytest.mark.django_db(transaction=True)
def test_two_operators_retrying_the_same_failures_at_once_queue_each_task_once(
    make_record, make_user, make_api_client, organization
):
    originals = [
        make_record(
            organization=organization,
            name="taskops.tasks.noop",
            state=TaskState.FAILURE,
            kwargs={"organization_id": organization.pk, "n": n},
        )
        for n in range(25)
    ]
    task_ids = [original.task_id for original in originals]
    clients = [
        make_api_client(make_user(organization=organization, role=Role.OPERATOR)) for _ in range(2)
    ]
    start = threading.Barrier(len(clients))
    answers: list[dict] = []

    def operator(client) -> None:
        try:
            start.wait()
            response = client.post(URL, {"task_ids": task_ids}, format="json")
            assert response.status_code == 202
            answers.append(response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=operator, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answers) == 2
    # Each failure queued exactly once between the two calls; the other call says why not.
    assert sum(len(answer["retried"]) for answer in answers) == len(originals)
    for original in originals:
        assert TaskRecord.objects.filter(retry_of=original.task_id).count() == 1
    skipped = [row["reason"] for answer in answers for row in answer["skipped"]]
    assert len(skipped) == len(originals)
    assert all("already being retried" in reason for reason in skipped)
