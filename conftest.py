"""Fixtures shared by every test: organizations, users, API clients and real workers."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.support.workers import ProcessManager
from tests.tickets.factories import MembershipFactory, OrganizationFactory, UserFactory
from tickets.models import Organization, Role

pytest_plugins = [
    "tests.support.dovecot",
    "tests.support.slack_server",
    "tests.support.oauth_server",
]


@pytest.fixture(scope="session", autouse=True)
def _empty_filesystem_broker() -> None:
    """Start every run with an empty embedded broker, so no stale message is consumed."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        for folder in ("queue", "control"):
            shutil.rmtree(settings.BROKER_DIR / folder, ignore_errors=True)
            (settings.BROKER_DIR / folder).mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def _local_imap_allowed(settings: Any) -> None:
    """The suite's Dovecot listens on 127.0.0.1 in plain text, and tests run without DEBUG:
    allow both, as a deployment with a local IMAP server would. Tests of the refusal turn
    these off again."""
    settings.ZENITH_IMAP_ALLOW_PLAINTEXT = True
    settings.ZENITH_IMAP_ALLOW_PRIVATE_HOSTS = True


@pytest.fixture
def organization(db: None) -> Organization:
    return OrganizationFactory(slug="acme", name="Acme")


@pytest.fixture
def other_organization(db: None) -> Organization:
    return OrganizationFactory(slug="globex", name="Globex")


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    """Make a user with a role in an organization."""

    def make(
        *, organization: Organization | None = None, role: Role = Role.OPERATOR, **kwargs: Any
    ) -> Any:
        user = UserFactory(**kwargs)
        if organization is not None:
            MembershipFactory(user=user, organization=organization, role=role)
        return user

    return make


@pytest.fixture
def user(make_user: Callable[..., Any], organization: Organization) -> Any:
    """An operator of `organization`."""
    return make_user(organization=organization, role=Role.OPERATOR, username="olivia")


@pytest.fixture
def make_api_client() -> Callable[[Any], APIClient]:
    """An API client authenticated with the user's token."""

    def make(user: Any | None) -> APIClient:
        client = APIClient()
        if user is not None:
            token, _ = Token.objects.get_or_create(user=user)
            client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client

    return make


@pytest.fixture
def api_client(make_api_client: Callable[[Any], APIClient], user: Any) -> APIClient:
    return make_api_client(user)


@pytest.fixture
def processes(tmp_path: Path, transactional_db: None) -> Iterator[ProcessManager]:
    """Start real worker/beat processes against the test database; all stopped afterwards."""
    manager = ProcessManager(tmp_path)
    try:
        yield manager
    finally:
        manager.stop_all()


@pytest.fixture
def live_worker(processes: ProcessManager) -> Any:
    """One real worker process consuming every queue."""
    return processes.worker(worker_type="all", concurrency=2)


@pytest.fixture
def inthread_worker(transactional_db: None) -> Iterator[Any]:
    """A real worker in a thread of the test process, consuming every queue of the real broker."""
    from celery.contrib.testing.worker import start_worker

    from zenith.celery import app

    with start_worker(
        app,
        pool="solo",
        perform_ping_check=False,
        shutdown_timeout=30,
        queues=["default", "ml_tasks", "sync_tasks"],
        loglevel="WARNING",
    ) as worker:
        yield worker
