"""Hostile input on every route: the API's GET parameters and write bodies, the admin's
lists and actions. PostgreSQL refuses NUL in text, Python recursion has a limit and ids
have a type, so a value that reaches them unchecked is a 500; the answer must instead be
a 2xx or a 4xx. Routes, parameters and bodies come from the OpenAPI schema and the admin
registry, so a new endpoint or admin page is swept automatically.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from drf_spectacular.generators import SchemaGenerator

from tests.integrations.factories import MailboxFactory, SlackWorkspaceFactory
from tests.tickets.factories import TicketFactory
from tickets.models import Role

pytestmark = pytest.mark.django_db

HOSTILE = {
    "nul": "%00",
    "invalid-utf8": "%C0%AF%FF",
    "oversized": quote("x" * 10_000),
}
ALWAYS = ("page", "page_size", "ordering", "search", "cursor")


def _schema() -> dict[str, Any]:
    return SchemaGenerator().get_schema(request=None, public=True)


def _get_routes() -> list[tuple[str, list[str]]]:
    schema = _schema()
    routes = []
    for path, operations in schema["paths"].items():
        get = operations.get("get")
        if get is None:
            continue
        names = [p["name"] for p in get.get("parameters", []) if p.get("in") == "query"]
        routes.append((path, sorted({*names, *ALWAYS})))
    return routes


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_no_query_parameter_turns_hostile_input_into_a_server_error(
    make_user, make_api_client, organization, other_organization, value
):
    admin = make_user(organization=organization, role=Role.ADMIN)
    client = make_api_client(admin)
    ticket = TicketFactory(organization=organization)
    mailbox = MailboxFactory(organization=organization)
    workspace = SlackWorkspaceFactory(organization=organization)
    ids = {"ticket": ticket.pk, "mailbox": mailbox.pk, "workspace": workspace.pk}
    failures = []
    for path, names in _get_routes():
        url = re.sub(r"\{[^}]+\}", lambda m: str(ids.get(m.group(0)[1:-1], 1)), path)
        for name in names:
            answer = client.get(f"{url}?{name}={value}")
            # 503 is an integration that is not configured here (Slack OAuth), not a crash.
            if answer.status_code >= 500 and answer.status_code != 503:
                failures.append((path, name, answer.status_code))
    assert failures == []


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_no_admin_list_turns_hostile_filters_into_a_server_error(admin_client, organization, value):
    """Every admin changelist, a superuser's view, with the value in its search, ordering,
    page, and each of its filters' parameters."""
    from django.contrib import admin

    TicketFactory(organization=organization)
    failures = []
    for model, model_admin in admin.site._registry.items():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        names = {"q", "o", "p", "organization__id__exact"}
        for entry in model_admin.list_filter:
            field = entry[0] if isinstance(entry, tuple) else entry
            if isinstance(field, str):
                names |= {f"{field}__exact", f"{field}__id__exact"}
            else:
                names.add(getattr(field, "parameter_name", "") or "x")
        for name in sorted(names):
            answer = admin_client.get(f"{url}?{name}={value}")
            if answer.status_code >= 500:
                failures.append((url, name, answer.status_code))
    assert failures == []


def test_a_nul_in_a_query_parameter_is_400_naming_it(api_client, admin_client):
    api = api_client.get("/api/v1/tasks/?state__exact=%00&name=%00")
    page = admin_client.get("/admin/taskops/taskrecord/?state__exact=%00")

    assert api.status_code == 400
    assert "a NUL character is not allowed" in api.json()["detail"]
    assert list(api.json()) == ["detail", "state__exact"]
    assert (page.status_code, page.content) == (
        400,
        b"state__exact: a NUL character is not allowed in a query parameter",
    )


def test_no_admin_action_turns_malformed_selected_ids_into_a_server_error(
    admin_client, organization
):
    """Every action of every admin page, posted with ids no primary key can hold; a real
    ticket selected beside them is still acted on."""
    from django.contrib import admin

    ticket = TicketFactory(organization=organization, category="")
    malformed = ["abc", "\x00", "1" * 40, "-1.5", ""]
    failures = []
    for model, model_admin in admin.site._registry.items():
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        names = [a if isinstance(a, str) else a.__name__ for a in model_admin.actions or []]
        for name in [*names, "delete_selected"]:
            answer = admin_client.post(
                url, {"action": name, "_selected_action": malformed, "index": 0}
            )
            if answer.status_code >= 500:
                failures.append((url, name, answer.status_code))
    assert failures == []
    # The well-formed id among malformed ones still reaches the action.
    confirm = admin_client.post(
        "/admin/tickets/ticket/",
        {"action": "delete_selected", "_selected_action": [*malformed, str(ticket.pk)]},
    )
    assert confirm.status_code == 200
    assert "Are you sure" in confirm.content.decode()
    assert str(ticket) in confirm.content.decode()


def _deep(depth: int) -> Any:
    return json.loads("[" * depth + "]" * depth)


def _hostile_value(kind: str, json_type: str | None) -> Any:
    """A value of the field's JSON type that no sane client sends."""
    if kind == "nul":
        return {"object": {"k\x00": "\x00"}, "array": ["\x00"]}.get(json_type or "", "a\x00b")
    if kind == "huge":
        return {
            "integer": 10**30,
            "number": 1e308,
            "array": [1] * 100_000,
            "object": {"k": "x" * 100_000},
            "boolean": "x" * 100_000,
        }.get(json_type or "", "x" * 100_000)
    return {"object": {"a": _deep(900)}}.get(json_type or "", _deep(900))


def _write_operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, JSON body properties) of every POST, PUT and PATCH in the schema."""
    schema = _schema()
    components = schema["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        return components[node["$ref"].split("/")[-1]] if "$ref" in node else node

    found = []
    for path, operations in schema["paths"].items():
        for method in ("post", "put", "patch"):
            operation = operations.get(method)
            if operation is None:
                continue
            content = (operation.get("requestBody") or {}).get("content", {})
            body = content.get("application/json", {}).get("schema")
            properties = resolve(body).get("properties", {}) if body else {}
            found.append((method, path, {k: resolve(v) for k, v in properties.items()}))
    return found


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["nul", "huge", "deep"])
def test_no_write_endpoint_turns_a_hostile_body_into_a_server_error(
    make_user, make_api_client, organization, kind
):
    """Every POST/PUT/PATCH, as a superuser (so no permission check answers first), with
    each field of its body NUL-laden, oversized, or nested 900 deep."""
    user = make_user(organization=organization, role=Role.ADMIN, is_staff=True, is_superuser=True)
    client = make_api_client(user)
    ids = {
        "ticket": TicketFactory(organization=organization).pk,
        "mailbox": MailboxFactory(organization=organization).pk,
        "workspace": SlackWorkspaceFactory(organization=organization).pk,
    }
    failures = []
    operations = _write_operations()
    for method, path, properties in operations:
        url = re.sub(r"\{[^}]+\}", lambda m: str(ids.get(m.group(0)[1:-1], 1)), path)
        body = {name: _hostile_value(kind, spec.get("type")) for name, spec in properties.items()}
        answer = getattr(client, method)(url, body, format="json")
        # 503: an integration that is not configured here (Slack OAuth), not a crash.
        if answer.status_code >= 500 and answer.status_code != 503:
            failures.append((method, path, answer.status_code))
    assert len(operations) >= 20  # the schema was read, not an empty sweep
    assert failures == []


def test_a_body_nested_deeper_than_the_bound_is_400_saying_so(api_client, organization):
    body = {"organization": organization.pk, "subject": "x", "body": "y", "tags": _deep(40)}

    answer = api_client.post("/api/v1/tickets/", body, format="json")

    assert answer.status_code == 400
    assert "nested deeper than 32" in answer.json()["detail"]
