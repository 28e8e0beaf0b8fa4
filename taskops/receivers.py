"""Celery signal receivers that keep the task ledger; they only hand over to taskops.ledger.

Connected in TaskOpsConfig.ready() unless ZENITH_TASK_LEDGER is off (the benchmark's
baseline). The revoked signal fires in the worker's main process, the others in the
process that runs the task (a pool child) or that publishes it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from taskops import ledger

logger = logging.getLogger(__name__)


def _safely(what: str, write: Any, *, wait: bool = False, **kwargs: Any) -> Any:
    """Run a ledger write; a ledger outage is logged, never turned into a task failure.

    With `wait` (the worker's writes around a task), a database that cannot be reached is
    tried again with backoff for ZENITH_LEDGER_RETRY_SECONDS: the worker holds the task
    meanwhile instead of burning the queue's retries, and a task that finished during a
    restart still gets its final state recorded.
    """
    deadline = time.monotonic() + (settings.ZENITH_LEDGER_RETRY_SECONDS if wait else 0)
    delay = 0.25
    while True:
        try:
            return write(**kwargs)
        except (OperationalError, InterfaceError) as exc:
            error: DatabaseError = exc
            close_old_connections()  # the next try opens a fresh connection
            if time.monotonic() + delay > deadline:
                break
            if delay == 0.25:
                logger.warning(
                    "task ledger: database unreachable, retrying %s of %s",
                    what,
                    kwargs.get("task_id"),
                )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        except DatabaseError as exc:
            error = exc
            break
    logger.warning(
        "task ledger: could not record %s of %s", what, kwargs.get("task_id"), exc_info=error
    )
    return None


def on_before_task_publish(
    sender: str | None = None,
    body: Any = None,
    routing_key: str | None = None,
    headers: dict[str, Any] | None = None,
    declare: list[Any] | None = None,
    **_: Any,
) -> None:
    headers = headers or {}
    if headers.get("retries"):
        return  # a retry re-publishes a task that already has its row
    if isinstance(body, dict):  # task protocol 1
        task_id, name = body.get("id"), body.get("task")
        args, kwargs = body.get("args"), body.get("kwargs")
    else:
        task_id, name = headers.get("id"), headers.get("task") or sender
        args, kwargs = (body[0], body[1]) if body else ((), {})
    if not task_id or not name:
        return
    queue = getattr(declare[0], "name", "") if declare else ""
    ledger.task_published(
        task_id=task_id,
        name=name,
        queue=queue or routing_key or "",
        args=args,
        kwargs=kwargs,
        headers=headers,
    )


def on_task_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if not task_id or task is None:
        return
    request = task.request
    request.zenith_started = time.time()
    started = _safely(
        "the start",
        ledger.task_started,
        wait=True,
        task_id=task_id,
        name=task.name,
        request=request,
    )
    if started == ledger.CANCELLED:
        # Cancelled while no worker knew it (revoke broadcasts reach live workers only).
        request.zenith_cancelled = True
    elif started == ledger.DUPLICATE:
        # Another copy of this message already ran it or runs it now (see ledger).
        request.zenith_duplicate = True
    elif (getattr(request, "delivery_info", None) or {}).get("redelivered"):
        # The broker gave it back: a worker died under it (or shut down before acking).
        # ZenithTask fails it once this count passes ZENITH_MAX_REDELIVERIES.
        deliveries = _safely(
            "a redelivery",
            ledger.task_redelivered,
            wait=True,
            task_id=task_id,
            retries=getattr(request, "retries", 0) or 0,
        )
        request.zenith_worker_lost = deliveries or 0


def on_task_success(sender: Any = None, result: Any = None, **_: Any) -> None:
    request = sender.request
    task_id = getattr(request, "id", None)
    if not task_id or getattr(request, "zenith_cancelled", False):
        return
    if getattr(request, "zenith_duplicate", False):
        return
    if getattr(request, "zenith_success_recorded", False):
        return  # written with the result row (taskops.results.ResultBackend)
    _safely(
        "the success",
        ledger.task_succeeded,
        wait=True,
        task_id=task_id,
        result=result,
        started=getattr(request, "zenith_started", None),
    )


def on_task_failure(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    einfo: Any = None,
    **_: Any,
) -> None:
    if not task_id:
        return
    request = getattr(sender, "request", None)
    tb = getattr(einfo, "traceback", "") or (
        ledger.format_traceback(exception) if exception is not None else ""
    )
    _safely(
        "the failure",
        ledger.task_failed,
        wait=True,
        task_id=task_id,
        retries=getattr(request, "retries", 0) or 0,
        exc=exception,
        tb=tb or "",
        started=getattr(request, "zenith_started", None),
    )


def on_task_retry(request: Any = None, reason: Any = None, einfo: Any = None, **_: Any) -> None:
    task_id = getattr(request, "id", None)
    if not task_id:
        return
    exc = getattr(reason, "exc", None) or reason
    _safely(
        "a retry",
        ledger.task_will_retry,
        wait=True,
        task_id=task_id,
        request=request,
        exc=exc,
        tb=getattr(einfo, "traceback", "") or "",
        when=getattr(reason, "when", None),
    )


def on_task_revoked(
    request: Any = None,
    terminated: bool = False,
    signum: Any = None,
    expired: bool = False,
    **_: Any,
) -> None:
    task_id = getattr(request, "id", None)
    if not task_id:
        return
    _safely(
        "the revoke",
        ledger.task_revoked,
        task_id=task_id,
        terminated=bool(terminated),
        signum=signum,
        expired=bool(expired),
    )


_RECEIVERS = (
    (signals.before_task_publish, on_before_task_publish),
    (signals.task_prerun, on_task_prerun),
    (signals.task_success, on_task_success),
    (signals.task_failure, on_task_failure),
    (signals.task_retry, on_task_retry),
    (signals.task_revoked, on_task_revoked),
)


def _uid(receiver: Any) -> str:
    return f"taskops.{receiver.__name__}"


def on_worker_init(**_: Any) -> None:
    """Move the STARTED write behind Celery's Django fixup, which connects at worker init.

    The fixup's prerun handler closes the database connection. Writing STARTED after it
    opens the connection the result backend and the task then use; before it, every task
    would open a connection only to have it closed at once.
    """
    signals.task_prerun.disconnect(on_task_prerun, dispatch_uid=_uid(on_task_prerun))
    signals.task_prerun.connect(on_task_prerun, weak=False, dispatch_uid=_uid(on_task_prerun))


def connect() -> None:
    """Start keeping the ledger in this process."""
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, weak=False, dispatch_uid=_uid(receiver))
    signals.worker_init.connect(on_worker_init, weak=False, dispatch_uid=_uid(on_worker_init))


def disconnect() -> None:
    """Stop keeping the ledger in this process (the benchmark's baseline)."""
    for signal, receiver in _RECEIVERS:
        signal.disconnect(receiver, dispatch_uid=_uid(receiver))
    signals.worker_init.disconnect(on_worker_init, dispatch_uid=_uid(on_worker_init))
