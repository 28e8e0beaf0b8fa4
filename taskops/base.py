"""The base class of every Zenith task: progress reports and the retry policy."""

from __future__ import annotations

from typing import Any

from celery import Task
from django.conf import settings
from django.db import InterfaceError, OperationalError


class TransientError(Exception):
    """An error that may pass (network, rate limit, lock timeout): the task is retried."""


# Errors worth another attempt; anything else is bad data and fails at once.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    OperationalError,
    InterfaceError,
)


class ZenithTask(Task):
    """Reports progress and retries transient errors after 60, 120 and 180 seconds."""

    max_retries = 3

    def progress(self, *, done: int, total: int, message: str = "") -> None:
        """Publish a PROGRESS state that the ledger and the API show."""
        if not self.request.id:
            return
        self.update_state(
            state="PROGRESS", meta={"done": done, "total": total, "message": message}
        )

    def retry_delay(self) -> int:
        """Seconds to wait before the next attempt (the policy in settings)."""
        delays = settings.ZENITH_RETRY_DELAYS
        return delays[min(self.request.retries, len(delays) - 1)]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            if self.request.called_directly:
                raise
            raise self.retry(exc=exc, countdown=self.retry_delay()) from exc
