"""Fixtures of the fault tests: real PostgreSQL and Redis, an empty broker, a trained model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection

from mlmodels import registry, services
from mlmodels.models import ModelVersion
from tests.mlmodels.conftest import purge_queues, sample_rows, write_csv
from tests.support.services import missing, redis_available
from tickets import services as ticket_services
from tickets.models import Organization


@pytest.fixture
def real_services(transactional_db: None) -> None:
    """Fault tests mean something only against the real database and broker."""
    if connection.vendor != "postgresql":
        missing("PostgreSQL (DATABASE_URL=postgresql://...)")
    broker = django_settings.CELERY_BROKER_URL
    if not broker.startswith("redis://") or not redis_available(broker):
        missing("Redis as the broker (CELERY_BROKER_URL=redis://...)")


@pytest.fixture
def broker(real_services: None) -> Iterator[None]:
    """An empty broker before and after the test."""
    purge_queues()
    yield
    purge_queues()


@pytest.fixture
def media_root(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = str(root)
    registry.cache_clear()
    yield root
    registry.cache_clear()


@pytest.fixture
def worker_env(media_root: Path) -> dict[str, str]:
    """Environment that makes a worker process read this test's model artifacts."""
    return {"DJANGO_MEDIA_ROOT": str(media_root)}


@pytest.fixture
def trained(
    organization: Organization, broker: None, media_root: Path, tmp_path: Path
) -> dict[str, ModelVersion]:
    """Active category and priority models trained on a seeded 300-ticket sample."""
    path = write_csv(tmp_path / "sample.csv", sample_rows(300, 0))
    ticket_services.tickets_import_csv(
        organization=organization,
        path=path,
        text_columns=["title", "body"],
        label_columns={"category": "category", "priority": "urgency"},
    )
    services.organization_models_train(organization=organization)
    purge_queues()  # classification the import may have queued
    versions = ModelVersion.objects.filter(organization=organization, status="active")
    return {version.target: version for version in versions}


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")
