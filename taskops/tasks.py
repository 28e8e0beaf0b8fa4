"""Housekeeping tasks of the task system (queue `default`)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from taskops import services


@shared_task(name="taskops.tasks.health_check_tasks", acks_late=True, reject_on_worker_lost=True)
def health_check_tasks(**kwargs: Any) -> dict[str, Any]:
    """Record beat's heartbeat; health reads its age to tell whether beat is alive."""
    heartbeat = services.heartbeat_record(name="beat")
    return {"heartbeat": heartbeat.last_seen.isoformat()}
