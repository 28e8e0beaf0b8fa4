"""Fixtures of the ML tests: seeded samples of the shared dataset, private artifact storage."""

from __future__ import annotations

import csv
import functools
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.signals import before_task_publish
from django.conf import settings as django_settings

from mlmodels import registry
from tests.support.services import missing, redis_available
from tickets import services as ticket_services
from tickets.demo import DEMO_DATASET
from tickets.models import Organization, Source, Ticket
from zenith.celery import app

QUEUES = ("default", "ml_tasks", "sync_tasks")


@functools.cache
def dataset_rows() -> list[dict[str, str]]:
    with DEMO_DATASET.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def sample_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """A fixed, seeded sample of the shared dataset."""
    rows = list(dataset_rows())
    random.Random(seed).shuffle(rows)
    return rows[:n]


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Artifacts of each test go to a private folder, and no loaded model leaks between tests."""
    root = tmp_path_factory.mktemp("media")
    settings.MEDIA_ROOT = str(root)
    registry.cache_clear()
    yield root
    registry.cache_clear()


@pytest.fixture
def import_sample(tmp_path: Path) -> Callable[..., ticket_services.ImportReport]:
    """Import a seeded sample through the project's CSV import (labels are human labels)."""

    def run(
        organization: Organization,
        n: int = 400,
        seed: int = 0,
        rows: list[dict[str, str]] | None = None,
    ) -> ticket_services.ImportReport:
        path = write_csv(
            tmp_path / f"sample-{organization.slug}-{n}-{seed}.csv", rows or sample_rows(n, seed)
        )
        return ticket_services.tickets_import_csv(
            organization=organization,
            path=path,
            text_columns=["title", "body"],
            label_columns={"category": "category", "priority": "urgency"},
        )

    return run


def unlabelled_tickets(organization: Organization, n: int, seed: int = 1) -> list[Ticket]:
    """`n` tickets with the dataset's texts but no labels, as if they came in through the API."""
    rows = sample_rows(n, seed)
    Ticket.objects.bulk_create(
        [
            Ticket(
                organization=organization,
                source=Source.API,
                subject=row["title"][:500],
                body=row["body"],
            )
            for row in rows
        ]
    )
    return list(Ticket.objects.filter(organization=organization, source=Source.API).order_by("id"))


def purge_queues() -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in QUEUES:
            try:
                channel.queue_purge(queue)
            except Exception:  # noqa: S112 - a queue never declared has nothing to purge
                continue


@pytest.fixture
def broker() -> Iterator[None]:
    """A reachable, empty broker; nothing a test publishes outlives it."""
    if django_settings.CELERY_BROKER_URL.startswith("redis://") and not redis_available(
        django_settings.CELERY_BROKER_URL
    ):
        missing(f"Redis at {django_settings.CELERY_BROKER_URL}")
    purge_queues()
    yield
    purge_queues()


@pytest.fixture
def published(broker: None) -> Iterator[list[dict[str, Any]]]:
    """Every task message published during the test: name, kwargs and headers."""
    messages: list[dict[str, Any]] = []

    def record(
        sender: str | None = None, body: Any = None, headers: Any = None, **kwargs: Any
    ) -> None:
        task_kwargs = body[1] if isinstance(body, list | tuple) and len(body) > 1 else {}
        messages.append({"name": sender, "kwargs": task_kwargs, "headers": dict(headers or {})})

    before_task_publish.connect(record, weak=False)
    try:
        yield messages
    finally:
        before_task_publish.disconnect(record)


def wait_until(predicate: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def worker_env(media_root: Path) -> dict[str, str]:
    """Environment that makes a worker process read this test's artifacts."""
    return {"DJANGO_MEDIA_ROOT": str(media_root)}
