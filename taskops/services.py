"""Writes of the task system."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from taskops.models import Heartbeat

# Message header naming who asked for a task: "user:<id>", "beat:<schedule>", or "system".
TRIGGERED_BY_HEADER = "zenith_triggered_by"


def triggered_by_label(user: Any | None) -> str:
    """The triggered-by value for a person (or the system when there is none)."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return "system"


def task_enqueue(
    *,
    name: str,
    kwargs: dict[str, Any],
    triggered_by: str = "system",
    countdown: float | None = None,
) -> str:
    """Publish task `name` with JSON kwargs once the current transaction commits; return its id.

    Tenant tasks pass `organization_id` in kwargs so the ledger knows their organization.
    Outside a transaction the task is published at once, so a broker outage raises here.
    """
    from zenith.celery import app

    task_id = str(uuid.uuid4())

    def send() -> None:
        app.send_task(
            name,
            kwargs=kwargs,
            task_id=task_id,
            countdown=countdown,
            headers={TRIGGERED_BY_HEADER: triggered_by},
        )

    transaction.on_commit(send)
    return task_id


def heartbeat_record(*, name: str, details: dict[str, Any] | None = None) -> Heartbeat:
    """Record that `name` is alive now."""
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"last_seen": timezone.now(), "details": details or {}}
    )
    return heartbeat
