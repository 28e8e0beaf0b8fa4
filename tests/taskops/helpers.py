"""Helpers of the task-operations tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from taskops.models import TaskRecord


def wait_for(condition: Callable[[], Any], *, timeout: float = 30.0, what: str = "it") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_for_state(task_id: str, *states: str, timeout: float = 30.0) -> TaskRecord:
    """The ledger row of `task_id` once it is in one of `states`."""
    try:
        return wait_for(
            lambda: TaskRecord.objects.filter(task_id=task_id, state__in=states).first(),
            timeout=timeout,
            what=f"{task_id} in {states}",
        )
    except AssertionError as exc:
        row = TaskRecord.objects.filter(task_id=task_id).values("state", "error").first()
        raise AssertionError(f"{exc}; the ledger has {row}") from None
