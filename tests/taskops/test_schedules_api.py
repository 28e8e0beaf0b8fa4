"""schedules/: periodic tasks over the API, every change recorded; sync_organization_data."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from taskops.models import ScheduleChange, TaskRecord, TaskState
from taskops.services import periodic_tasks_setup
from tests.integrations.factories import MailboxFactory
from tests.taskops.factories import PeriodicTaskFactory
from tests.taskops.helpers import wait_for_state
from tickets.models import Role

pytestmark = pytest.mark.django_db

URL = "/api/v1/schedules/"


@pytest.fixture
def org_admin(make_user, organization):
    return make_user(organization=organization, role=Role.ADMIN, username="ada")


@pytest.fixture
def their_admin(make_user, other_organization):
    return make_user(organization=other_organization, role=Role.ADMIN, username="otto")


@pytest.fixture
def ours(organization):
    """A schedule of `organization`: its kwargs name it."""
    return PeriodicTaskFactory(
        name="Acme e-mail",
        task="integrations.tasks.process_email_tickets",
        kwargs=json.dumps({"organization_id": organization.pk}),
        interval__every=10,
        interval__period=IntervalSchedule.MINUTES,
    )


@pytest.fixture
def defaults(db):
    periodic_tasks_setup()
    return PeriodicTask.objects.filter(kwargs="{}")


def names(response):
    assert response.status_code == 200, response.content
    return [row["name"] for row in response.json()["results"]]


def test_superusers_see_every_schedule_org_admins_only_their_own(
    make_api_client, superuser, org_admin, their_admin, user, ours, defaults, organization
):
    everything = names(make_api_client(superuser).get(URL, {"page_size": 100}))
    mine = make_api_client(org_admin).get(URL).json()["results"]

    assert set(everything) == {ours.name, *defaults.values_list("name", flat=True)}
    assert [(row["name"], row["organization"], row["organization_slug"]) for row in mine] == [
        (ours.name, organization.pk, "acme")
    ]
    assert names(make_api_client(their_admin).get(URL)) == []
    # An operator is no admin: schedules are configuration.
    assert names(make_api_client(user).get(URL)) == []


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "", None),
        ("patch", "", {"enabled": False}),
        ("post", "run", None),
        ("get", "history", None),
    ],
)
def test_another_organizations_schedule_is_404_and_untouched(
    make_api_client, their_admin, ours, method, suffix, body, django_capture_on_commit_callbacks
):
    url = f"{URL}{ours.pk}/{suffix}"

    with django_capture_on_commit_callbacks(execute=True):
        response = getattr(make_api_client(their_admin), method)(url, body, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "no such schedule"}
    ours.refresh_from_db()
    assert ours.enabled
    assert not ScheduleChange.objects.exists()
    assert not TaskRecord.objects.exists()


def test_global_schedules_are_for_staff_only(make_api_client, org_admin, defaults):
    health = defaults.get(task="taskops.tasks.health_check_tasks")

    response = make_api_client(org_admin).patch(
        f"{URL}{health.pk}", {"enabled": False}, format="json"
    )

    assert response.status_code == 404
    health.refresh_from_db()
    assert health.enabled


def test_disabling_is_recorded_with_who_when_before_and_after(
    make_api_client, org_admin, ours, admin_client
):
    changed_before = PeriodicTasks.last_change()

    response = make_api_client(org_admin).patch(
        f"{URL}{ours.pk}/", {"enabled": False}, format="json"
    )

    assert (response.status_code, response.json()["enabled"]) == (200, False)
    ours.refresh_from_db()
    assert not ours.enabled
    # Beat notices changes through this marker.
    assert PeriodicTasks.last_change() > changed_before
    change = ScheduleChange.objects.get()
    assert (change.action, change.actor, change.actor_username, change.source) == (
        "changed",
        f"user:{org_admin.pk}",
        "ada",
        "api",
    )
    assert (change.before["enabled"], change.after["enabled"]) == (True, False)
    history = make_api_client(org_admin).get(f"{URL}{ours.pk}/history").json()["results"]
    assert [(row["action"], row["actor_username"]) for row in history] == [("changed", "ada")]
    page = admin_client.get(f"/admin/django_celery_beat/periodictask/{ours.pk}/history/")
    assert page.status_code == 200
    assert "schedule-change" in page.text
    assert "ada" in page.text
    assert "<code>enabled</code>: true → false" in page.text


def test_an_unchanged_patch_records_nothing(make_api_client, org_admin, ours):
    response = make_api_client(org_admin).patch(f"{URL}{ours.pk}", {"enabled": True}, format="json")

    assert response.status_code == 200
    assert not ScheduleChange.objects.exists()


def test_interval_and_crontab_replace_each_other(make_api_client, superuser, ours):
    client = make_api_client(superuser)

    to_cron = client.patch(
        f"{URL}{ours.pk}", {"crontab": {"minute": "*/15", "hour": "8-18"}}, format="json"
    )
    ours.refresh_from_db()
    assert to_cron.status_code == 200
    assert ours.interval is None
    assert (ours.crontab.minute, ours.crontab.hour, ours.crontab.day_of_week) == (
        "*/15",
        "8-18",
        "*",
    )
    assert to_cron.json()["crontab"]["minute"] == "*/15"

    to_interval = client.patch(
        f"{URL}{ours.pk}", {"interval": {"every": 2, "period": "hours"}}, format="json"
    )
    ours.refresh_from_db()
    assert to_interval.status_code == 200
    assert ours.crontab is None
    assert (ours.interval.every, ours.interval.period) == (2, "hours")
    assert ScheduleChange.objects.count() == 2
    assert CrontabSchedule.objects.filter(minute="*/15").count() == 1


def test_arguments_change_within_the_admins_organization_only(
    make_api_client, org_admin, ours, organization, other_organization
):
    client = make_api_client(org_admin)

    kept = client.patch(
        f"{URL}{ours.pk}",
        {"args": [1], "kwargs": {"organization_id": organization.pk, "limit": 5}},
        format="json",
    )
    moved = client.patch(
        f"{URL}{ours.pk}", {"kwargs": {"organization_id": other_organization.pk}}, format="json"
    )
    made_global = client.patch(f"{URL}{ours.pk}", {"kwargs": {}}, format="json")

    assert kept.status_code == 200
    assert (kept.json()["args"], kept.json()["kwargs"]["limit"]) == ([1], 5)
    for refused in (moved, made_global):
        assert refused.status_code == 400
        assert set(refused.json()) == {"detail", "kwargs"}
    ours.refresh_from_db()
    assert json.loads(ours.kwargs) == {"organization_id": organization.pk, "limit": 5}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"crontab": {"minute": "99"}}, "crontab"),
        ({"crontab": {"hour": "x" * 500}}, "crontab"),
        ({"crontab": {"minute": "0", "timezone": "Mars/Olympus"}}, "crontab"),
        ({"interval": {"every": 0, "period": "minutes"}}, "interval"),
        ({"interval": {"every": 5, "period": "fortnights"}}, "interval"),
        ({"interval": {"every": 1, "period": "microseconds"}}, "interval"),
        ({"interval": {"every": 5, "period": "minutes"}, "crontab": {"minute": "0"}}, "crontab"),
        ({"kwargs": [1, 2]}, "kwargs"),
        ({"args": {"a": 1}}, "args"),
        ({"args": ["x" * 20_000]}, "args"),
        ({"args": ["a\x00b"]}, "args"),
        ({"kwargs": {"k\x00": 1}}, "kwargs"),
        ({"enabled": "perhaps"}, "enabled"),
        ({"task": "os.system"}, "task"),
        ({"name": "renamed"}, "name"),
    ],
)
def test_bad_changes_answer_400_naming_the_field(make_api_client, superuser, ours, body, field):
    response = make_api_client(superuser).patch(f"{URL}{ours.pk}", body, format="json")

    assert response.status_code == 400
    assert set(response.json()) == {"detail", field}
    assert field in response.json()["detail"]
    assert not ScheduleChange.objects.exists()
    ours.refresh_from_db()
    assert (ours.task, ours.name, ours.interval.every) == (
        "integrations.tasks.process_email_tickets",
        "Acme e-mail",
        10,
    )


@pytest.mark.parametrize("pk", ["²", "abc", "9" * 30, "0"])
def test_odd_ids_are_404(make_api_client, superuser, pk):
    assert make_api_client(superuser).get(f"{URL}{pk}/").status_code == 404


def test_filters_search_and_ordering(make_api_client, superuser, ours, defaults):
    client = make_api_client(superuser)
    ours.enabled = False
    ours.save()

    assert names(client.get(URL, {"enabled": "false"})) == [ours.name]
    assert names(client.get(URL, {"task": "taskops.tasks.health_check_tasks"})) == [
        "Health check heartbeat"
    ]
    assert names(client.get(URL, {"search": "Acme"})) == [ours.name]
    ordered = names(client.get(URL, {"ordering": "-name", "page_size": 2}))
    assert ordered == sorted([ours.name, *defaults.values_list("name", flat=True)])[::-1][:2]


def test_run_now_sends_the_task_as_the_caller_and_records_it(
    make_api_client, org_admin, ours, organization, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = make_api_client(org_admin).post(f"{URL}{ours.pk}/run")

    assert response.status_code == 202
    record = TaskRecord.objects.get(task_id=response.json()["task_id"])
    assert (record.name, record.organization_id, record.triggered_by) == (
        "integrations.tasks.process_email_tickets",
        organization.pk,
        f"user:{org_admin.pk}",
    )
    run = ScheduleChange.objects.get(action="run")
    assert run.after == {"task_id": record.task_id}


def test_run_refuses_a_task_zenith_does_not_define(make_api_client, superuser, admin_client):
    rogue = PeriodicTaskFactory(
        name="rogue",
        task="celery.backend_cleanup",
        interval__every=1,
        interval__period=IntervalSchedule.HOURS,
    )

    response = make_api_client(superuser).post(f"{URL}{rogue.pk}/run")
    page = admin_client.post(
        "/admin/django_celery_beat/periodictask/",
        {"action": "run_tasks", "_selected_action": [rogue.pk]},
        follow=True,
    )

    assert response.status_code == 409
    assert "not a registered Zenith task" in response.json()["detail"]
    assert "not a registered Zenith task" in page.text
    assert not TaskRecord.objects.exists()


def test_admin_actions_and_edits_are_recorded(admin_client, ours):
    admin_client.post(
        "/admin/django_celery_beat/periodictask/",
        {"action": "disable_tasks", "_selected_action": [ours.pk]},
    )
    ours.refresh_from_db()

    assert not ours.enabled
    change = ScheduleChange.objects.get()
    assert (change.source, change.before["enabled"], change.after["enabled"]) == (
        "admin",
        True,
        False,
    )


def test_a_scheduled_run_executes_on_a_real_worker(make_api_client, make_user, inthread_worker):
    root = make_user(username="groot", is_superuser=True, is_staff=True)
    noop = PeriodicTaskFactory(
        name="noop",
        task="taskops.tasks.noop",
        interval__every=1,
        interval__period=IntervalSchedule.HOURS,
    )

    response = make_api_client(root).post(f"{URL}{noop.pk}/run")

    assert response.status_code == 202
    assert wait_for_state(response.json()["task_id"], TaskState.SUCCESS).triggered_by == (
        f"user:{root.pk}"
    )


# ------------------------------------------------------------------------------
# sync_organization_data: from the API and from manage.py sync_all
# ------------------------------------------------------------------------------
def test_sync_an_organization_from_the_api(
    api_client, organization, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post(
            "/api/v1/tasks/sync/organization",
            {"organization_id": organization.pk, "sources": ["email"]},
            format="json",
        )

    assert response.status_code == 202
    record = TaskRecord.objects.get(task_id=response.json()["task_id"])
    assert record.name == "integrations.tasks.sync_organization_data"
    assert record.kwargs == {"organization_id": organization.pk, "sources": ["email"]}
    assert record.organization_id == organization.pk


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"organization_id": "OTHER"}, 404, None),
        ({"organization_id": "acme"}, 400, "organization_id"),
        ({"organization_id": 10**30}, 400, "organization_id"),
        ({"organization_id": "ORG", "sources": ["fax"]}, 400, "sources"),
        ({"organization_id": "ORG", "everything": True}, 400, "everything"),
    ],
)
def test_sync_refuses_other_organizations_and_bad_input(
    api_client, organization, other_organization, body, status, field
):
    ids = {"ORG": organization.pk, "OTHER": other_organization.pk}
    body = {
        key: ids.get(value, value) if isinstance(value, str) else value
        for key, value in body.items()
    }

    response = api_client.post("/api/v1/tasks/sync/organization", body, format="json")

    assert response.status_code == status
    assert "detail" in response.json()
    if field:
        assert set(response.json()) == {"detail", field}
    assert not TaskRecord.objects.exists()


def test_sync_all_covers_the_callers_organizations_with_a_source(
    api_client, organization, other_organization, django_capture_on_commit_callbacks
):
    for org in (organization, other_organization):
        MailboxFactory(organization=org, name="Support", host="127.0.0.1", port=1, username="u")

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.post("/api/v1/tasks/sync/all", {}, format="json")

    assert response.status_code == 202
    tasks = response.json()["tasks"]
    assert [(row["organization"], row["organization_slug"]) for row in tasks] == [
        (organization.pk, "acme")
    ]
    assert TaskRecord.objects.get().organization_id == organization.pk


def test_sync_all_command_enqueues_or_runs(
    organization, capsys, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        call_command("sync_all", "--org", "acme", "--async")
    task_id = capsys.readouterr().out.strip()
    record = TaskRecord.objects.get(task_id=task_id)
    assert (record.name, record.kwargs) == (
        "integrations.tasks.sync_organization_data",
        {"organization_id": organization.pk},
    )

    call_command("sync_all", "--org", "acme", "--source", "email")
    assert 'acme: {"email"' in capsys.readouterr().out

    with pytest.raises(Exception, match="no organization with slug 'nope'"):
        call_command("sync_all", "--org", "nope")


def test_sync_organization_data_runs_on_a_real_worker(
    make_api_client, make_user, organization, inthread_worker
):
    operator = make_user(organization=organization, role=Role.OPERATOR, username="opal")

    response = make_api_client(operator).post(
        "/api/v1/tasks/sync/organization", {"organization_id": organization.pk}, format="json"
    )

    record = wait_for_state(response.json()["task_id"], TaskState.SUCCESS, TaskState.FAILURE)
    assert record.state == TaskState.SUCCESS, record.error
    assert set(record.result) == {"slack", "email"}
