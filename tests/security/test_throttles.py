"""DRF throttling: anonymous, per user, and tighter scopes; 429 with Retry-After.

Counters live in the configured cache (Redis when REDIS_URL is set), as in production.
The suite runs with throttling off (pyproject.toml); these tests turn it on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.throttling import SimpleRateThrottle

from integrations.models import Mailbox
from tickets.models import Role

pytestmark = pytest.mark.django_db

RATES = {
    "anon": "3/minute",
    "user": "5/minute",
    "tasks_health": "2/minute",
    "tasks_active": "2/minute",
    "mailbox_test_connection": "1/minute",
}


@pytest.fixture
def throttled() -> Iterator[list[tuple[str, str]]]:
    """Throttling on with small rates; the counters this test touches are reset around it."""
    touched: list[tuple[str, str]] = [("anon", "127.0.0.1"), ("user", "127.0.0.1")]

    def reset() -> None:
        keys = [SimpleRateThrottle.cache_format % {"scope": s, "ident": i} for s, i in touched]
        SimpleRateThrottle.cache.delete_many(keys)

    reset()
    with override_settings(ZENITH_THROTTLE_ENABLED=True, ZENITH_THROTTLE_RATES=RATES):
        yield touched
    reset()


def counted(touched: list[tuple[str, str]], user: Any, *scopes: str) -> None:
    """Reset `user`'s counters now (ids repeat across runs; the cache outlives them)."""
    for scope in ("user", *scopes):
        touched.append((scope, str(user.pk)))
    SimpleRateThrottle.cache.delete_many(
        [SimpleRateThrottle.cache_format % {"scope": s, "ident": i} for s, i in touched]
    )


def assert_throttled(response: Any) -> None:
    assert response.status_code == 429, response.content
    wait = int(response["Retry-After"])
    assert 0 < wait <= 60
    assert "throttled" in response.json()["detail"].lower()


def test_anonymous_callers_are_limited_per_address(client, throttled):
    for _ in range(3):
        assert client.get("/api/v1/").status_code == 200
    assert_throttled(client.get("/api/v1/"))


def test_each_user_has_their_own_budget(throttled, make_user, make_api_client, organization):
    first = make_user(organization=organization, role=Role.VIEWER, username="first")
    second = make_user(organization=organization, role=Role.VIEWER, username="second")
    counted(throttled, first)
    counted(throttled, second)
    api = make_api_client(first)
    for _ in range(5):
        assert api.get("/api/v1/organizations/").status_code == 200
    assert_throttled(api.get("/api/v1/organizations/"))
    # Another user is not slowed down by the first one.
    assert make_api_client(second).get("/api/v1/organizations/").status_code == 200


def test_health_has_a_tighter_limit_than_the_rest(throttled, make_user, make_api_client):
    staff = make_user(username="ops", is_staff=True)
    counted(throttled, staff, "tasks_health")
    api = make_api_client(staff)
    for _ in range(2):
        assert api.get("/api/v1/tasks/health").status_code in (200, 503)
    assert_throttled(api.get("/api/v1/tasks/health"))
    # The same user's other requests still go through.
    assert api.get("/api/v1/organizations/").status_code == 200


def test_active_tasks_have_a_tighter_limit(throttled, user, api_client):
    counted(throttled, user, "tasks_active")
    for _ in range(2):
        assert api_client.get("/api/v1/tasks/active").status_code == 200
    assert_throttled(api_client.get("/api/v1/tasks/active"))


def test_mailbox_test_connection_has_a_tighter_limit(
    throttled, make_user, make_api_client, organization
):
    admin = make_user(organization=organization, role=Role.ADMIN, username="boss")
    counted(throttled, admin, "mailbox_test_connection")
    mailbox = Mailbox.objects.create(
        organization=organization,
        name="support",
        host="127.0.0.1",
        port=1,
        security="none",
        username="support@example.com",
        password="unused",
    )
    api = make_api_client(admin)
    url = f"/api/v1/integrations/mailboxes/{mailbox.pk}/test-connection"
    assert api.post(url).status_code in (200, 202)
    assert_throttled(api.post(url))


def test_throttling_off_lets_every_request_through(client):
    with override_settings(ZENITH_THROTTLE_ENABLED=False, ZENITH_THROTTLE_RATES=RATES):
        assert all(client.get("/api/v1/").status_code == 200 for _ in range(6))
