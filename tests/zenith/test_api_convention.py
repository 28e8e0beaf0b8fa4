"""One API convention, checked over every route in the OpenAPI schema.

- every error under /api/v1/ (and Slack's events endpoint, /metrics) is JSON {"detail": str};
- `organization` is an id with `organization_slug` beside it, wherever a row has one;
- every query parameter the schema advertises changes the answer for some value;
- page_size is honoured (up to 500).
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from alerts.models import AlertIncident, AlertRule
from integrations.models import InboundEmail, Mailbox, SlackChannel, SlackWorkspace
from mlmodels.models import ModelVersion
from taskops.models import ScheduleChange, TaskRecord, TaskState
from taskops.services import periodic_tasks_setup, schedule_update
from tests.tickets.factories import TicketFactory
from tickets.models import Role

pytestmark = pytest.mark.django_db

PARAM = re.compile(r"\{(\w+)\}")
HOSTILE_IDS = ["²", "9" * 25, "x" * 300, "-1"]
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
        if method in METHODS
    ]


def call(client: Any, method: str, url: str, body: str = "{}") -> Any:
    if method in ("get", "delete"):
        return getattr(client, method)(url)
    return getattr(client, method)(url, data=body, content_type="application/json")


def assert_error_shape(response: Any, *, where: str) -> None:
    assert response.status_code >= 400, where
    assert response.status_code != 500, f"{where}: 500 {response.content[:300]!r}"
    assert response["Content-Type"].startswith("application/json"), (
        f"{where}: {response.status_code} {response['Content-Type']} {response.content[:200]!r}"
    )
    body = response.json()
    assert isinstance(body, dict), f"{where}: {body!r}"
    assert isinstance(body.get("detail"), str), f"{where}: {body!r}"
    assert body["detail"], where


@pytest.fixture
def superuser(make_user):
    return make_user(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def root_client(make_api_client, superuser):
    return make_api_client(superuser)


# ------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------
def test_anonymous_callers_get_json_401_on_every_route(client, schema):
    checked = 0
    for path, method, _operation in operations(schema):
        url = PARAM.sub("1", path)
        response = call(client, method, url)
        if path.startswith("/api/v1/docs") or response.status_code < 400:
            continue
        assert response.status_code in (401, 403), (method, url, response.status_code)
        assert_error_shape(response, where=f"{method} {url}")
        checked += 1
    assert checked > 40


def test_hostile_path_ids_are_json_4xx_never_500(root_client, schema):
    checked = 0
    for path, method, _operation in operations(schema):
        if not PARAM.search(path):
            continue
        for value in HOSTILE_IDS:
            url = PARAM.sub(value, path)
            response = call(root_client, method, url)
            assert response.status_code in (400, 404), (method, url, response.status_code)
            assert_error_shape(response, where=f"{method} {url}")
            checked += 1
    assert checked > 60


def test_malformed_bodies_are_json_400(root_client, schema):
    checked = 0
    for path, method, _operation in operations(schema):
        if method not in ("post", "patch") or PARAM.search(path):
            continue
        for body in ('{"organization_id": ', "[1, 2]", '"text"'):
            response = getattr(root_client, method)(
                path, data=body, content_type="application/json"
            )
            assert response.status_code in (400, 404, 409), (method, path, body, response.content)
            assert_error_shape(response, where=f"{method} {path} {body}")
            checked += 1
    assert checked >= 30


def test_methods_a_route_does_not_have_are_json_405(root_client, schema):
    checked = 0
    for path, methods in schema["paths"].items():
        missing = [method for method in ("put", "delete") if method not in methods]
        for method in missing:
            url = PARAM.sub("1", path)
            response = getattr(root_client, method)(url)
            if response.status_code == 404:  # the object 1 does not exist: also JSON
                assert_error_shape(response, where=f"{method} {url}")
                continue
            assert response.status_code == 405, (method, url, response.status_code)
            assert_error_shape(response, where=f"{method} {url}")
            checked += 1
    assert checked > 20


@pytest.mark.parametrize(
    "url",
    ["/api/v1/nope", "/api/v1/nope/", "/api/v1/tickets/1/nope", "/api/v2/tickets/", "/api/"],
)
def test_unknown_api_urls_are_a_json_404(root_client, url):
    response = root_client.get(url)

    assert response.status_code == 404
    assert_error_shape(response, where=url)


def test_tasks_of_an_organization_with_odd_digits_is_404(root_client):
    response = root_client.get("/api/v1/tasks/organization/²")

    assert response.status_code == 404
    assert_error_shape(response, where="tasks/organization/²")


def test_an_uncaught_error_is_a_json_500(superuser, monkeypatch):
    """No real fault to provoke here: a selector is made to raise, as a bug would."""
    from taskops import selectors

    def broken(**kwargs):
        raise RuntimeError("the database said something odd")

    monkeypatch.setattr(selectors, "task_list_active_for_user", broken)
    client = Client(raise_request_exception=False)
    client.force_login(superuser)

    response = client.get("/api/v1/tasks/active")

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert "odd" not in response.text


def test_slack_events_errors_are_json(client, settings):
    settings.SLACK_SIGNING_SECRET = ""
    unconfigured = client.post(
        "/api/v1/integrations/slack/events", data="{}", content_type="application/json"
    )
    wrong_method = client.get("/api/v1/integrations/slack/events")
    settings.SLACK_SIGNING_SECRET = "s3cret"
    unsigned = client.post(
        "/api/v1/integrations/slack/events",
        data=json.dumps({"type": "url_verification", "challenge": "c"}),
        content_type="application/json",
    )

    assert unconfigured.status_code == 503
    assert wrong_method.status_code == 405
    assert wrong_method["Allow"] == "POST"
    assert unsigned.status_code in (401, 403)
    for response in (unconfigured, wrong_method, unsigned):
        assert_error_shape(response, where="slack events")


def test_metrics_refusal_is_json_and_still_asks_for_a_bearer_token(client):
    response = client.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert_error_shape(response, where="/metrics")


# ------------------------------------------------------------------------------
# Lists: organization shape, advertised parameters, page_size
# ------------------------------------------------------------------------------
@pytest.fixture
def everything(organization, other_organization, make_user):
    """Two or more rows in every list, in both organizations, differing in every filter."""
    now = timezone.now()
    for org in (organization, other_organization):
        TicketFactory(organization=org, subject=f"{org.slug} VPN down", category="network")
        TicketFactory(
            organization=org,
            subject=f"{org.slug} printer",
            status="closed",
            priority="high",
            source="email",
            needs_review=True,
            category="hardware",
        )
        ModelVersion.objects.create(organization=org, target="category", version=1, status="active")
        ModelVersion.objects.create(
            organization=org, target="priority", version=2, status="rejected"
        )
        support = Mailbox.objects.create(
            organization=org, name="Support", host="imap.example.com", username="u"
        )
        Mailbox.objects.create(
            organization=org, name="Sales", host="imap.example.com", username="v", enabled=False
        )
        for uid, state in ((1, "ticket"), (2, "rejected")):
            InboundEmail.objects.create(
                organization=org, mailbox=support, uidvalidity=1, uid=uid, state=state
            )
        workspace = SlackWorkspace.objects.create(organization=org, team_id=f"T{org.pk}", name="ws")
        SlackWorkspace.objects.create(
            organization=org, team_id=f"T{org.pk}x", name="ws2", enabled=False
        )
        SlackChannel.objects.create(workspace=workspace, channel_id="C1", name="help")
        SlackChannel.objects.create(workspace=workspace, channel_id="C2", name="it", enabled=False)
        failures = AlertRule.objects.create(organization=org, name="failures", task_pattern="*")
        AlertRule.objects.create(
            organization=org, name="integrations", kind="integration_error", enabled=False
        )
        AlertIncident.objects.create(
            rule=failures, organization=org, opened_at=now, last_seen_at=now, count=2
        )
        AlertIncident.objects.create(
            rule=failures,
            organization=org,
            state="resolved",
            opened_at=now - timedelta(hours=1),
            last_seen_at=now,
            resolved_at=now,
        )
        for number, state in enumerate([TaskState.PENDING, TaskState.STARTED, TaskState.FAILURE]):
            queued = now - timedelta(minutes=10 * number + org.pk)
            TaskRecord.objects.create(
                task_id=f"{org.slug}-{number}",
                name=f"taskops.tasks.{['noop', 'diagnostic_sleep', 'diagnostic_fail'][number]}",
                queue=["default", "ml_tasks", "sync_tasks"][number],
                organization=org,
                state=state,
                args=[number],
                kwargs={"organization_id": org.pk, "n": number},
                triggered_by=f"user:{number}",
                retry_of="" if number else "x",
                runtime=number,
                queued_at=queued,
                finished_at=queued + timedelta(seconds=number) if number == 2 else None,
                updated_at=queued,
            )
    periodic_tasks_setup()
    from django_celery_beat.models import PeriodicTask

    health = PeriodicTask.objects.get(task="taskops.tasks.health_check_tasks")
    root = make_user(username="changer", is_superuser=True)
    schedule_update(periodic_id=health.pk, changes={"enabled": False}, user=root, source="api")
    schedule_update(periodic_id=health.pk, changes={"enabled": True}, user=root, source="api")
    assert ScheduleChange.objects.count() == 2
    return {"organization": organization, "other": other_organization, "schedule": health}


# Lists under one object (an organization, a schedule): their 404 is tested elsewhere.
PATH_SCOPED = {"tasks_organization_list", "schedules_history_list"}


def list_operations(schema, everything):
    """(url, operation) of every GET that answers a page of rows."""
    fill = {
        "org_id": str(everything["organization"].pk),
        "id": str(everything["schedule"].pk),
    }
    found = []
    for path, method, operation in operations(schema):
        if method != "get":
            continue
        names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        if "page" not in names:
            continue
        found.append((PARAM.sub(lambda match: fill[match.group(1)], path), operation))
    return found


def rows_of(response):
    assert response.status_code == 200, response.content[:300]
    body = response.json()
    return body["count"], body["results"]


def test_organization_is_an_id_with_its_slug_beside_it_everywhere(root_client, schema, everything):
    slugs = {everything["organization"].pk: "acme", everything["other"].pk: "globex"}
    checked = set()
    for url, _operation in list_operations(schema, everything):
        _count, rows = rows_of(root_client.get(url, {"page_size": 500}))
        for row in rows:
            if "organization" not in row:
                continue
            value = row["organization"]
            assert value is None or isinstance(value, int), (url, row)
            assert "organization_slug" in row, url
            assert row["organization_slug"] == slugs.get(value), (url, row)
            checked.add(url.split("?")[0])
    assert {
        "/api/v1/tickets/",
        "/api/v1/models/",
        "/api/v1/tasks/",
        "/api/v1/integrations/mailboxes/",
        "/api/v1/integrations/slack/workspaces/",
        "/api/v1/alerts/rules/",
        "/api/v1/alerts/incidents/",
    } <= checked


def _candidates(param, rows):
    """Query dicts to try for one advertised parameter."""
    name = param["name"]
    schema = param.get("schema", {})
    if schema.get("type") == "array":
        schema = schema.get("items", {})
    if name == "page":
        return [{"page": 2, "page_size": 1}]
    if name == "page_size":
        return [{"page_size": 1}]
    if name == "ordering":
        keys = [key for key, value in rows[0].items() if not isinstance(value, dict | list)]
        return [{"ordering": f"{sign}{key}"} for key in keys for sign in ("", "-")]
    if name == "args_contains":
        return [{name: "[1]"}, {name: "[987654321]"}]
    if name == "kwargs_contains":
        return [{name: '{"n": 1}'}, {name: '{"zz": 1}'}]
    values = list(schema.get("enum", []))
    values += sorted({str(row[name]) for row in rows if isinstance(row.get(name), str | int)})
    kind = schema.get("type")
    if kind in ("integer", "number"):
        values.append("987654321")
    elif kind == "boolean":
        values += ["true", "false"]
    elif schema.get("format") == "date-time":
        values += ["2999-01-01T00:00:00Z", "1999-01-01T00:00:00Z"]
    else:
        values.append("zzz-no-such-value")
    return [{name: value} for value in values]


def test_every_advertised_query_parameter_has_an_effect(root_client, schema, everything):
    checked = 0
    for url, operation in list_operations(schema, everything):
        baseline = rows_of(root_client.get(url))
        assert baseline[0] >= 2, f"{url}: the fixture needs two rows here"
        for param in operation.get("parameters", []):
            if param["in"] != "query":
                continue
            tried = []
            for query in _candidates(param, baseline[1]):
                response = root_client.get(url, query)
                tried.append((query, response.status_code))
                if response.status_code == 200 and rows_of(response) != baseline:
                    break
            else:
                pytest.fail(f"{url}: ?{param['name']}= changes nothing (tried {tried})")
            checked += 1
    assert checked > 50


def test_page_size_is_honoured_on_every_list(root_client, schema, everything):
    for url, _operation in list_operations(schema, everything):
        count, rows = rows_of(root_client.get(url, {"page_size": 1}))
        assert (len(rows), count >= 2) == (1, True), url
        refused = root_client.get(url, {"page_size": "many"})
        assert refused.status_code == 400, url
        assert set(refused.json()) == {"detail", "page_size"}


def test_search_is_advertised_only_where_it_works(schema):
    advertised = sorted(
        path
        for path, method, operation in operations(schema)
        if any(p["name"] == "search" for p in operation.get("parameters", []))
    )

    assert advertised == ["/api/v1/schedules/", "/api/v1/tickets/"]


def test_another_organizations_rows_are_never_listed(
    make_api_client, make_user, schema, everything
):
    member = make_user(organization=everything["other"], role=Role.ADMIN, username="gina")
    client = make_api_client(member)
    for url, operation in list_operations(schema, everything):
        if operation["operationId"] in PATH_SCOPED:
            continue
        _count, rows = rows_of(client.get(url, {"page_size": 500}))
        for row in rows:
            assert row.get("organization") in (None, everything["other"].pk), (url, row)
            assert row.get("organization_slug") in (None, "globex"), (url, row)
