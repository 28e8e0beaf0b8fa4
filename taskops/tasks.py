"""Tasks of the task system (queue `default`): housekeeping, and diagnostics for operators.

The diagnostics (`noop`, `diagnostic_sleep`, `diagnostic_fail`, `diagnostic_crash`) exercise
the worker, the ledger and the control API without touching data: run one from the admin's
periodic tasks ("run now") or the shell to check that a worker answers, that cancel terminates a
running task, that transient errors are retried on the configured delays, and that a task
which kills its worker ends FAILURE after ZENITH_MAX_REDELIVERIES instead of looping.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from taskops import services
from taskops.base import TransientError, zenith_task


@zenith_task("taskops.tasks.health_check_tasks")
def health_check_tasks(**kwargs: Any) -> dict[str, Any]:
    """Record beat's heartbeat; health reads its age to tell whether beat is alive."""
    heartbeat = services.heartbeat_record(name="beat")
    return {"heartbeat": heartbeat.last_seen.isoformat()}


@zenith_task("taskops.tasks.cleanup_old_task_results")
def cleanup_old_task_results(**kwargs: Any) -> dict[str, int]:
    """Delete ledger rows past ZENITH_TASK_RETENTION_DAYS and expired result rows, in batches."""
    return services.task_records_cleanup()


@zenith_task("taskops.tasks.cleanup_failed_tasks")
def cleanup_failed_tasks(**kwargs: Any) -> dict[str, int]:
    """Mark tasks stuck in PENDING/STARTED/PROGRESS for over 24 hours as FAILURE."""
    return services.task_records_fail_stuck()


@zenith_task("taskops.tasks.noop", idempotent=False)
def noop(**kwargs: Any) -> None:
    """Diagnostic: do nothing (a worker answers; the ledger's cost per task)."""


@zenith_task("taskops.tasks.diagnostic_sleep", idempotent=False, bind=True)
def diagnostic_sleep(self: Any, seconds: float = 10.0, **kwargs: Any) -> dict[str, float]:
    """Diagnostic: sleep, reporting progress every second (something to watch and cancel)."""
    started = time.monotonic()
    total = max(1, round(seconds))
    while (elapsed := time.monotonic() - started) < seconds:
        self.progress(done=min(int(elapsed), total), total=total, message="sleeping")
        time.sleep(min(1.0, seconds - elapsed))
    self.progress(done=total, total=total, message="done")
    return {"slept": round(time.monotonic() - started, 3)}


@zenith_task("taskops.tasks.diagnostic_fail", idempotent=False, bind=True)
def diagnostic_fail(
    self: Any, failures: int = 1, permanent: bool = False, **kwargs: Any
) -> dict[str, int]:
    """Diagnostic: fail transiently on the first `failures` attempts, then succeed.

    With `permanent` it raises a non-transient error, which fails at once without retries.
    """
    attempt = self.request.retries + 1
    if permanent:
        raise ValueError(f"diagnostic permanent failure on attempt {attempt}")
    if self.request.retries < failures:
        raise TransientError(f"diagnostic transient failure {attempt} of {failures}")
    return {"attempts": attempt}


@zenith_task("taskops.tasks.diagnostic_crash")
def diagnostic_crash(**kwargs: Any) -> None:
    """Diagnostic: SIGKILL the process that runs it, as a segfault or the OOM killer would.

    The broker redelivers it (acks_late, reject_on_worker_lost) until the ledger has seen
    ZENITH_MAX_REDELIVERIES lost deliveries; the next delivery fails without running.
    """
    os.kill(os.getpid(), signal.SIGKILL)
