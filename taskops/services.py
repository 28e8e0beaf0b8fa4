"""Writes of the task system."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from taskops.models import Heartbeat


def heartbeat_record(*, name: str, details: dict[str, Any] | None = None) -> Heartbeat:
    """Record that `name` is alive now."""
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"last_seen": timezone.now(), "details": details or {}}
    )
    return heartbeat
