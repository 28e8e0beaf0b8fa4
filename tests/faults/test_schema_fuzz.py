"""Schemathesis against the API's own OpenAPI schema: no 5xx, every 4xx names its problem.

The WSGI application is called in-process (no server) as an admin of one organization,
with a handful of derandomized examples per operation so the run stays bounded.

Left out: the Slack events endpoint (requests must carry a Slack signature the fuzzer
cannot produce, so every case would be a 403 by design) and the health endpoint (its
contract is a 503 while no worker or beat runs, and each call waits 1 s for workers).
Nothing else does external I/O inside the request: tasks are published only after the
transaction commits, and the `db` fixture never commits, so fuzzed POSTs enqueue
nothing; the Redis queues are purged afterwards anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from rest_framework.authtoken.models import Token
from schemathesis.core.result import Ok

from tests.support.services import redis_available
from tickets.models import Organization, Role

pytestmark = [pytest.mark.faults, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 12
SKIPPED_PATHS = ("/api/v1/integrations/slack/events", "/api/v1/tasks/health")


def _purge_broker() -> None:
    from django.conf import settings as django_settings

    broker = django_settings.CELERY_BROKER_URL
    if not broker.startswith("redis://") or not redis_available(broker):
        return
    from tests.mlmodels.conftest import purge_queues

    purge_queues()


@pytest.fixture
def clean_broker() -> Iterator[None]:
    yield
    _purge_broker()


@pytest.fixture
def keep_connection() -> Iterator[None]:
    """As Django's test client does: requests must not close the test's DB connection."""
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _problem(response: Any) -> str | None:
    """Why a response breaks the contract, or None."""
    status = response.status_code
    if status >= 500:
        return f"server error {status}: {response.text[:500]}"
    if 400 <= status < 500:
        try:
            body = json.loads(response.text) if response.text else None
        except ValueError:
            return f"{status} without a JSON body: {response.text[:200]!r}"
        if not isinstance(body, dict) or not body:
            return f"{status} whose JSON body names no problem: {body!r}"
    return None


def _fuzz_operation(operation: Any, headers: dict[str, str], failures: list[str]) -> int:
    """Run a few derandomized cases of one operation; record each distinct problem once."""
    seen: set[str] = set()
    calls: list[int] = []

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def fuzz(case: Any) -> None:
        response = case.call(headers=headers)
        calls.append(response.status_code)
        problem = _problem(response)
        if problem and problem[:40] not in seen:
            seen.add(problem[:40])
            failures.append(
                f"{operation.method.upper()} {case.formatted_path} "
                f"query={case.query!r} body={case.body!r}: {problem}"
            )

    fuzz()
    return len(calls)


def test_no_server_errors_and_described_client_errors(
    db: None,
    clean_broker: None,
    keep_connection: None,
    organization: Organization,
    make_user: Callable[..., Any],
    settings: Any,
) -> None:
    from zenith.wsgi import application

    # Every feature configured, so an answer of 503 can only mean a real failure (unset, the
    # "Add to Slack" endpoints say 503 "not configured" by design).
    settings.SLACK_CLIENT_ID, settings.SLACK_CLIENT_SECRET = "fuzz-client", "fuzz-secret"

    admin = make_user(organization=organization, role=Role.ADMIN, username="fuzzy")
    token = Token.objects.create(user=admin)
    headers = {"Authorization": f"Token {token.key}", "Accept": "application/json"}

    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/", application)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an invalid operation: {result.err()}"
        if not result.ok().path.rstrip("/").startswith(SKIPPED_PATHS):
            operations.append(result.ok())
    assert len(operations) >= 5, "the schema lists the API's operations"

    failures: list[str] = []
    for operation in operations:
        calls = _fuzz_operation(operation, headers, failures)
        assert calls, f"no case reached {operation.method.upper()} {operation.path}"

    assert not failures, "\n".join(failures)
