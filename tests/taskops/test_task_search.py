"""GET tasks/: search the ledger by state, name, organization, queue, who, when and arguments."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from taskops.filters import json_contains
from taskops.models import TaskRecord, TaskState
from tickets.models import Role

pytestmark = pytest.mark.django_db

URL = "/api/v1/tasks/"


def ids(response):
    assert response.status_code == 200, response.content
    return [row["task_id"] for row in response.json()["results"]]


@pytest.fixture
def ledger(make_record, organization, other_organization):
    """Tasks of both organizations, one with no organization, in several states."""
    now = timezone.now()
    return {
        "sync_failed": make_record(
            organization=organization,
            name="integrations.tasks.sync_slack_tickets",
            queue="sync_tasks",
            state=TaskState.FAILURE,
            kwargs={"organization_id": organization.pk, "options": {"channels": ["C1", "C2"]}},
            triggered_by="beat:Slack sync",
            queued_at=now - timedelta(hours=3),
            runtime=4.0,
        ),
        "classify_revoked": make_record(
            organization=organization,
            name="mlmodels.tasks.classify_ticket_task",
            queue="ml_tasks",
            state=TaskState.REVOKED,
            args=[17, "urgent"],
            kwargs={"ticket_id": 17, "organization_id": organization.pk},
            triggered_by="user:1",
            queued_at=now - timedelta(hours=2),
            runtime=1.0,
        ),
        "classify_ok": make_record(
            organization=organization,
            name="mlmodels.tasks.classify_ticket_task",
            queue="ml_tasks",
            state=TaskState.SUCCESS,
            args=[18],
            kwargs={"ticket_id": 18, "organization_id": organization.pk},
            queued_at=now - timedelta(hours=1),
            runtime=2.0,
        ),
        "theirs_failed": make_record(
            organization=other_organization,
            name="mlmodels.tasks.classify_ticket_task",
            queue="ml_tasks",
            state=TaskState.FAILURE,
            args=[17, "urgent"],
            kwargs={"ticket_id": 17, "organization_id": other_organization.pk},
            queued_at=now - timedelta(minutes=30),
        ),
        "system_failed": make_record(
            name="taskops.tasks.cleanup_old_task_results",
            state=TaskState.FAILURE,
            queued_at=now - timedelta(minutes=10),
        ),
    }


def test_a_member_finds_only_their_organizations_tasks(api_client, ledger):
    found = ids(api_client.get(URL))

    assert found == [
        ledger["classify_ok"].task_id,
        ledger["classify_revoked"].task_id,
        ledger["sync_failed"].task_id,
    ]


def test_another_organizations_tasks_are_not_listed_even_when_asked_for(
    make_api_client, outsider, ledger, organization, other_organization
):
    client = make_api_client(outsider)

    assert ids(client.get(URL, {"organization": organization.pk})) == []
    assert ids(client.get(URL, {"organization_slug": organization.slug})) == []
    assert ids(client.get(URL, {"args_contains": "[17]"})) == [ledger["theirs_failed"].task_id]
    assert ids(client.get(URL)) == [ledger["theirs_failed"].task_id]


def test_superusers_see_every_task_and_tasks_without_an_organization(
    make_api_client, superuser, ledger
):
    found = ids(make_api_client(superuser).get(URL, {"state": "FAILURE"}))

    assert found == [
        ledger["system_failed"].task_id,
        ledger["theirs_failed"].task_id,
        ledger["sync_failed"].task_id,
    ]


def test_staff_see_their_organizations_and_tasks_without_one(
    make_api_client, make_user, organization, ledger
):
    staff = make_user(organization=organization, role=Role.VIEWER, is_staff=True, username="s")

    found = set(ids(make_api_client(staff).get(URL)))

    assert ledger["system_failed"].task_id in found
    assert ledger["theirs_failed"].task_id not in found


@pytest.mark.parametrize(
    "query",
    [
        {"state": ["FAILURE", "REVOKED"]},
        {"state": "FAILURE,REVOKED"},
        {"state": "failure, revoked"},
    ],
)
def test_several_states_repeated_or_comma_separated(api_client, ledger, query):
    found = ids(api_client.get(URL, query))

    assert found == [ledger["classify_revoked"].task_id, ledger["sync_failed"].task_id]


def test_filters_by_name_queue_who_and_time(api_client, ledger, organization):
    sync = ledger["sync_failed"].task_id
    classify = [ledger["classify_ok"].task_id, ledger["classify_revoked"].task_id]
    start = ledger["classify_revoked"].queued_at

    assert ids(api_client.get(URL, {"name": "integrations.tasks.sync_slack_tickets"})) == [sync]
    assert ids(api_client.get(URL, {"name_prefix": "mlmodels."})) == classify
    assert ids(api_client.get(URL, {"queue": "ml_tasks"})) == classify
    assert ids(api_client.get(URL, {"triggered_by": "beat:Slack sync"})) == [sync]
    assert ids(api_client.get(URL, {"organization": organization.pk})) == [*classify, sync]
    assert ids(api_client.get(URL, {"created_after": start.isoformat()})) == classify
    assert ids(api_client.get(URL, {"created_before": start.isoformat()})) == [sync]


def test_arguments_containment_on_postgresql_at_any_depth(api_client, ledger, organization):
    revoked = ledger["classify_revoked"].task_id

    assert ids(api_client.get(URL, {"args_contains": '["urgent"]'})) == [revoked]
    assert ids(api_client.get(URL, {"args_contains": '[17, "urgent"]'})) == [revoked]
    assert ids(api_client.get(URL, {"kwargs_contains": '{"ticket_id": 17}'})) == [revoked]
    nested = json.dumps({"options": {"channels": ["C2"]}})
    assert ids(api_client.get(URL, {"kwargs_contains": nested})) == [ledger["sync_failed"].task_id]
    assert ids(api_client.get(URL, {"kwargs_contains": '{"ticket_id": 99}'})) == []


def test_the_documented_fallback_without_jsonb_matches_top_level_values(ledger):
    """What SQLite runs (positions and top-level keys), run here against the same rows."""
    records = TaskRecord.objects.all()

    def found(field, value):
        matched = json_contains(records, field=field, value=value, vendor="sqlite")
        return set(matched.values_list("task_id", flat=True))

    both = {ledger["classify_revoked"].task_id, ledger["theirs_failed"].task_id}
    assert found("args", ["urgent"]) == both
    assert found("args", [17, "urgent"]) == both
    assert found("kwargs", {"ticket_id": 17}) == both
    assert found("kwargs", {"options": {"channels": ["C1", "C2"]}}) == {
        ledger["sync_failed"].task_id
    }
    # Top-level values compare whole in the fallback: a part of a nested value does not match.
    assert found("kwargs", {"options": {"channels": ["C2"]}}) == set()
    assert found("kwargs", {"a__b": 1}) == set()


def test_ordering_and_page_size(api_client, ledger):
    by_runtime = ids(api_client.get(URL, {"ordering": "runtime"}))
    by_runtime_desc = ids(api_client.get(URL, {"ordering": "-runtime", "page_size": 2}))

    assert by_runtime == [
        ledger["classify_revoked"].task_id,
        ledger["classify_ok"].task_id,
        ledger["sync_failed"].task_id,
    ]
    assert by_runtime_desc == [ledger["sync_failed"].task_id, ledger["classify_ok"].task_id]
    page = api_client.get(URL, {"ordering": "-runtime", "page_size": 2}).json()
    assert page["count"] == 3
    assert "page_size=2" in page["next"]


def test_page_size_is_cut_to_500(make_api_client, superuser, organization):
    now = timezone.now()
    TaskRecord.objects.bulk_create(
        TaskRecord(
            task_id=f"bulk-{number}",
            name="taskops.tasks.noop",
            organization=organization,
            state=TaskState.SUCCESS,
            queued_at=now,
            updated_at=now,
        )
        for number in range(501)
    )

    body = make_api_client(superuser).get(URL, {"page_size": 1000}).json()

    assert (body["count"], len(body["results"])) == (501, 500)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"state": "EXPLODED"}, "state"),
        ({"organization": "acme"}, "organization"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"args_contains": '{"ticket_id": 17}'}, "args_contains"),
        ({"args_contains": "[17"}, "args_contains"),
        ({"kwargs_contains": "[17]"}, "kwargs_contains"),
        ({"kwargs_contains": "{" + '"k": 1, ' * 400 + '"z": 2}'}, "kwargs_contains"),
        ({"args_contains": '["\\u0000"]'}, "args_contains"),
        ({"kwargs_contains": '{"a": {"\\u0000": 1}}'}, "kwargs_contains"),
        ({"args_contains": "[" * 999 + "]" * 999}, "args_contains"),
        ({"args_contains": "[" * 17 + "]" * 17}, "args_contains"),
        ({"ordering": "password"}, "ordering"),
        ({"ordering": "-error"}, "ordering"),
        ({"page_size": "lots"}, "page_size"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "²"}, "page_size"),
    ],
)
def test_bad_parameters_answer_400_naming_the_field(api_client, ledger, query, field):
    response = api_client.get(URL, query)

    assert response.status_code == 400
    assert set(response.json()) == {"detail", field}
    assert field in response.json()["detail"]


def test_anonymous_callers_get_a_json_401(client, ledger):
    response = client.get(URL)

    assert response.status_code in (401, 403)
    assert "detail" in response.json()


def test_the_seed_list_of_an_organization_still_works_and_rejects_odd_digits(
    api_client, ledger, organization
):
    seed = api_client.get(f"/api/v1/tasks/organization/{organization.pk}", {"state": "FAILURE"})
    odd = api_client.get("/api/v1/tasks/organization/²")

    assert [row["task_id"] for row in seed.json()["results"]] == [ledger["sync_failed"].task_id]
    assert odd.status_code == 404
    assert odd.json() == {"detail": "no such organization"}


def test_an_offset_postgresql_refuses_is_read_in_utc(api_client, ledger):
    """ISO 8601 allows +21:24; PostgreSQL does not. (Found by the schema fuzzer.)"""
    response = api_client.get(URL, {"created_before": "2999-11-15T19:55:43+21:24"})

    assert len(ids(response)) == 3
