"""The base class of every Zenith task: progress reports and the retry policy."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore
from django.conf import settings
from django.db import InterfaceError, OperationalError

from taskops.errors import TransientError
from taskops.progress import ProgressCallback

# Errors worth another attempt; anything else is bad data and fails at once.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    OperationalError,
    InterfaceError,
)


class RedeliveredTooOften(Exception):
    """The worker died under this task more often than ZENITH_MAX_REDELIVERIES allows."""


class ZenithTask(Task):
    """Reports progress and retries transient errors after 60, 120 and 180 seconds."""

    max_retries = 3

    # Reports closer together than this are skipped (except the last one, done == total),
    # so a loop may report every item without a write per item.
    progress_min_interval = 0.5

    def progress(self, *, done: int, total: int, message: str = "") -> None:
        """Publish a PROGRESS state that the ledger and the API show."""
        request = self.request
        if not request.id or request.called_directly:
            return
        now = time.monotonic()
        last = getattr(request, "zenith_progress_at", None)
        if last is not None and done < total and now - last < self.progress_min_interval:
            return
        request.zenith_progress_at = now  # type: ignore[attr-defined]  # per-run bookkeeping
        self.update_state(state="PROGRESS", meta={"done": done, "total": total, "message": message})
        if settings.ZENITH_TASK_LEDGER:
            from taskops import ledger

            ledger.task_progressed(task_id=request.id, done=done, total=total, message=message)

    def progress_callback(self) -> ProgressCallback:
        """A ``ProgressCallback`` for services: forwards each report to ``progress``."""
        return lambda done, total, message: self.progress(done=done, total=total, message=message)

    def replace(self, sig: Any) -> Any:
        """Celery's replace (same task id), with the ledger row queued again first: a second
        message of a running task is otherwise refused as a duplicate copy."""
        if settings.ZENITH_TASK_LEDGER and self.request.id and not self.request.called_directly:
            from taskops import ledger

            ledger.task_replaced(task_id=self.request.id)
        return super().replace(sig)

    def retry_delay(self) -> int:
        """Seconds to wait before the next attempt (the policy in settings)."""
        delays = settings.ZENITH_RETRY_DELAYS
        return delays[min(self.request.retries, len(delays) - 1)]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if getattr(self.request, "zenith_cancelled", False):
            # The ledger says a person cancelled it before any worker knew (see receivers).
            self.backend.mark_as_revoked(
                str(self.request.id), "cancelled before it started", request=self.request
            )
            raise Ignore()
        if getattr(self.request, "zenith_duplicate", False):
            # A second copy of a message whose task already ran or runs elsewhere: the
            # ledger row and the result belong to the copy that runs; this one is dropped.
            raise Ignore()
        lost = getattr(self.request, "zenith_worker_lost", 0)
        if lost > settings.ZENITH_MAX_REDELIVERIES:
            # Set by the ledger's prerun receiver: fail (and ack) rather than crash again.
            raise RedeliveredTooOften(
                f"the worker died {lost} times running this task; not running it again "
                f"(ZENITH_MAX_REDELIVERIES={settings.ZENITH_MAX_REDELIVERIES})"
            )
        try:
            return super().__call__(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            if self.request.called_directly:
                raise
            raise self.retry(exc=exc, countdown=self.retry_delay()) from exc


def zenith_task(name: str, *, idempotent: bool = True, **options: Any) -> Callable[..., Any]:
    """``shared_task`` with Zenith's defaults: an explicit name, ``ZenithTask`` (retry policy,
    progress, ledger guards), and late acks with reject-on-worker-lost for idempotent tasks.

    Idempotent tasks are acknowledged only after they ran and are delivered again when their
    worker dies; ``ZENITH_MAX_REDELIVERIES`` stops a task that keeps killing its worker.
    """
    if idempotent:
        options.setdefault("acks_late", True)
        options.setdefault("reject_on_worker_lost", True)
    return shared_task(name=name, base=ZenithTask, **options)
