"""Login lock-out (django-axes): after 10 failures the right password is refused until cool-off.

Counted per address and per username, for the admin's login and the API's session login
(/api-auth/login/; the API has no password-for-token endpoint, tokens are issued by
`manage.py drf_create_token`). The suite runs with lock-out off (pyproject.toml: Django's
test client logs in without a request, which axes refuses); these tests turn it on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client, override_settings

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password-42"
LIMIT = 10


@pytest.fixture
def lockout() -> Iterator[None]:
    # A fast hasher: these tests hash dozens of wrong passwords; the lock-out is the point.
    with override_settings(
        AXES_ENABLED=True,
        AXES_FAILURE_LIMIT=LIMIT,
        AXES_COOLOFF_TIME=timedelta(seconds=3),
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    ):
        yield


@pytest.fixture
def staff(lockout: None, make_user: Any) -> Any:
    return make_user(username="alice", is_staff=True, is_superuser=True, password=PASSWORD)


def admin_login(username: str, password: str, *, ip: str = "10.0.0.1") -> tuple[Client, Any]:
    client = Client(REMOTE_ADDR=ip)
    form = {"username": username, "password": password, "next": "/admin/"}
    response = client.post("/admin/login/?next=/admin/", form)
    return client, response


def logged_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def test_ten_failures_lock_the_right_password_out_until_the_cool_off(staff):
    # Nine failures: the right password still works (and clears the count).
    for _ in range(LIMIT - 1):
        _, response = admin_login("alice", "wrong")
        assert response.status_code == 200  # the form again, with its error
    client, response = admin_login("alice", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)

    for _ in range(LIMIT):
        admin_login("alice", "wrong")
    client, response = admin_login("alice", PASSWORD)
    assert response.status_code == 429
    assert not logged_in(client)

    time.sleep(3.5)  # the cool-off (3 s here; ZENITH_LOGIN_COOLOFF_MINUTES in production)
    client, response = admin_login("alice", PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_one_address_guessing_many_usernames_is_locked_out(staff):
    for n in range(LIMIT):
        admin_login(f"guess{n}", "wrong", ip="10.0.0.66")
    client, response = admin_login("alice", PASSWORD, ip="10.0.0.66")
    assert response.status_code == 429
    assert not logged_in(client)
    # Alice from her own address is not affected.
    client, response = admin_login("alice", PASSWORD, ip="10.0.0.7")
    assert response.status_code == 302


def test_many_addresses_guessing_one_username_lock_it(staff):
    for n in range(LIMIT):
        admin_login("alice", "wrong", ip=f"10.1.0.{n + 1}")
    client, response = admin_login("alice", PASSWORD, ip="10.2.0.1")
    assert response.status_code == 429
    assert not logged_in(client)


def test_api_session_login_failures_count_and_lock_too(staff):
    api = Client(REMOTE_ADDR="10.0.0.9")
    statuses = [
        api.post("/api-auth/login/", {"username": "alice", "password": "wrong"}).status_code
        for _ in range(LIMIT)
    ]
    # The form again nine times; the tenth failure is the one that locks.
    assert statuses == [200] * (LIMIT - 1) + [429]
    response = api.post("/api-auth/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert api.get("/api/v1/organizations/").status_code in (401, 403)
    # And the admin's login refuses her too: one count per user, whichever door.
    _, response = admin_login("alice", PASSWORD, ip="10.0.0.10")
    assert response.status_code == 429
