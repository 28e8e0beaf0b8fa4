"""Writes of the task ledger: one row per published task, moved along by the worker.

The publish path costs one INSERT; each state change on the worker one UPDATE keyed by
the unique task id. Every write is guarded so that a late signal never moves a task
out of a state a person chose (REVOKED) or back from a final one.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import traceback as traceback_module
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from taskops.models import ACTIVE_STATES, TaskRecord, TaskState

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Message headers Zenith sets; see taskops.services.task_enqueue.
TRIGGERED_BY_HEADER = "zenith_triggered_by"
ORGANIZATION_HEADER = "zenith_organization_id"
RETRY_OF_HEADER = "zenith_retry_of"
# django-celery-beat names the schedule of every task it sends in this header.
PERIODIC_TASK_HEADER = "periodic_task_name"

MAX_RESULT_CHARS = 4000
MAX_ERROR_CHARS = 2000
MAX_TRACEBACK_CHARS = 20000


def _jsonable(value: Any, *, fallback: Any) -> Any:
    """`value` when the ledger's JSON encoder takes it, else `fallback` (never raises)."""
    try:
        json.dumps(value, cls=DjangoJSONEncoder)
    except (TypeError, ValueError):
        return fallback
    return value


def organization_id_from(*, headers: dict[str, Any], kwargs: Any) -> int | None:
    """The organization a task names explicitly: its header, else its organization_id kwarg."""
    value = headers.get(ORGANIZATION_HEADER)
    if value in (None, "") and isinstance(kwargs, dict):
        value = kwargs.get("organization_id")
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def triggered_by_from(headers: dict[str, Any]) -> str:
    """Who asked for the task: the Zenith header, else the beat schedule, else the system."""
    value = headers.get(TRIGGERED_BY_HEADER)
    if value:
        return str(value)[:255]
    schedule = headers.get(PERIODIC_TASK_HEADER)
    if schedule:
        return f"beat:{schedule}"[:255]
    return "system"


def _parse_eta(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    try:
        eta = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return eta if timezone.is_aware(eta) else eta.replace(tzinfo=UTC)


def result_summary(value: Any) -> Any:
    """A task's return value as stored: itself when small and JSON, else a truncated repr."""
    try:
        text = json.dumps(value, cls=DjangoJSONEncoder)
    except (TypeError, ValueError):
        text = None
    if text is not None and len(text) <= MAX_RESULT_CHARS:
        return value
    return {"summary": repr(value)[:MAX_RESULT_CHARS], "truncated": True}


def error_text(exc: BaseException | Any) -> str:
    if isinstance(exc, BaseException):
        return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    return str(exc)[:MAX_ERROR_CHARS]


def _ledger_write(func: Callable[P, R]) -> Callable[P, R]:
    """Inside a caller's transaction, write in a savepoint: a failed write never breaks it."""

    @functools.wraps(func)
    def write(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            with transaction.atomic():
                return func(*args, **kwargs)
        return func(*args, **kwargs)

    return write


def _one_round_trip_async_commit() -> bool:
    """Whether a statement can commit on its own without waiting for the WAL flush.

    PostgreSQL runs the statements of one simple-protocol query as one implicit transaction,
    so "SET LOCAL synchronous_commit TO OFF; <statement>" is a single round trip. That needs
    client-side binding (psycopg 3's default in Django) and no transaction of the caller's.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3 and not connection.settings_dict["OPTIONS"].get("server_side_binding")


# The writes every task makes (publish, start, success) are one statement and one round trip
# each: no ORM query building, values adapted by the model's own fields, and SQL valid on
# PostgreSQL and SQLite alike (both take ON CONFLICT ... DO NOTHING). On PostgreSQL they
# commit without waiting for the WAL flush (synchronous_commit off for that statement): a
# ledger write per state change would otherwise cost more than a short task itself. A
# database crash may lose the last fraction of a second of these ledger writes, never a row
# of another table, and a worker rewrites a missing row when the task starts. SQLite in WAL
# mode with synchronous=NORMAL does not flush on commit anyway.
ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF; "


@functools.lru_cache(maxsize=32)
def _statement(kind: str, names: tuple[str, ...], vendor: str) -> tuple[str, tuple[Any, ...]]:
    """The SQL (and the fields of its parameters) to insert or update these columns."""
    quote = connection.ops.quote_name
    by_attname = {field.attname: field for field in TaskRecord._meta.concrete_fields}
    fields = tuple(by_attname[name] for name in names)
    table = quote(TaskRecord._meta.db_table)
    if kind == "insert":
        columns = ", ".join(quote(field.column or field.attname) for field in fields)
        placeholders = ", ".join(["%s"] * len(fields))
        # Identifiers come from the model, values are parameters.
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "  # noqa: S608
            f"ON CONFLICT ({quote('task_id')}) DO NOTHING"
        )
    elif kind == "start":
        assignments = ", ".join(f"{quote(field.column or field.attname)} = %s" for field in fields)
        state, retries = quote("state"), quote("retries")
        # Parameters after the values: task id, the two startable states, the two running
        # states, whether this delivery is a redelivery, and the delivery's retry number.
        sql = (
            f"UPDATE {table} SET {assignments} "  # noqa: S608
            f"WHERE {quote('task_id')} = %s AND ({state} IN (%s, %s) "
            f"OR ({state} IN (%s, %s) AND (%s OR {retries} < %s)))"
        )
    else:
        assignments = ", ".join(f"{quote(field.column or field.attname)} = %s" for field in fields)
        sql = (
            f"UPDATE {table} SET {assignments} "  # noqa: S608
            f"WHERE {quote('task_id')} = %s AND {quote('state')} <> %s"
        )
    return sql, fields


def _execute(kind: str, values: dict[str, Any], extra: tuple[Any, ...] = ()) -> int:
    sql, fields = _statement(kind, tuple(values), connection.vendor)
    params = [field.get_db_prep_save(values[field.attname], connection) for field in fields]
    with connection.cursor() as cursor:
        if _one_round_trip_async_commit():
            cursor.execute(ASYNC_COMMIT + sql, [*params, *extra])
            cursor.nextset()  # from the SET's result to the statement's
        else:
            cursor.execute(sql, [*params, *extra])
        return cursor.rowcount


def _insert_unless_present(**values: Any) -> int:
    """INSERT a ledger row (model defaults for what is not given) unless its task id exists."""
    row = {
        field.attname: values[field.attname] if field.attname in values else field.get_default()
        for field in TaskRecord._meta.concrete_fields
        if not field.primary_key
    }
    return _execute("insert", row)


def _update_unless_revoked(task_id: str, **values: Any) -> int:
    """UPDATE the task's row unless a person revoked it; the number of rows changed."""
    return _execute("update", values, (task_id, TaskState.REVOKED))


def task_published(
    *,
    task_id: str,
    name: str,
    queue: str,
    args: Any,
    kwargs: Any,
    headers: dict[str, Any],
) -> None:
    """Record a task the moment it is published: PENDING, with its organization and arguments.

    Called in whichever process publishes (web, beat, a worker, a command). Publishing inside
    a transaction that rolls back still sends the message (use task_enqueue to publish after
    commit); the row then goes with the rollback and the worker writes it from the message
    when the task starts, so the task is never missing from the ledger.
    """
    now = timezone.now()
    args = _jsonable(list(args or []), fallback=[repr(arg) for arg in args or []])
    kwargs = _jsonable(dict(kwargs or {}), fallback={k: repr(v) for k, v in (kwargs or {}).items()})
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            inserted = _insert_unless_present(
                task_id=task_id,
                name=name[:255],
                queue=(queue or "")[:100],
                organization_id=organization_id_from(headers=headers, kwargs=kwargs),
                args=args,
                kwargs=kwargs,
                state=TaskState.PENDING,
                triggered_by=triggered_by_from(headers),
                retry_of=str(headers.get(RETRY_OF_HEADER) or "")[:255],
                eta=_parse_eta(headers.get("eta")),
                queued_at=now,
                updated_at=now,
            )
    except DatabaseError:
        # The message still goes out; the worker writes the row when the task starts.
        logger.warning("could not record published task %s %s", name, task_id, exc_info=True)
        return
    if not inserted:
        # The same id published again (e.g. apply_async(task_id=...)): keep the first row.
        logger.info("task %s is already in the ledger", task_id)


def _request_headers(request: Any) -> dict[str, Any]:
    """The message headers a worker-side request carries (Zenith's and beat's)."""
    keys = (TRIGGERED_BY_HEADER, ORGANIZATION_HEADER, RETRY_OF_HEADER, PERIODIC_TASK_HEADER)
    return {key: getattr(request, key, None) for key in keys}


def _record_from_request(*, task_id: str, name: str, request: Any, state: str) -> None:
    """Write the row of a task whose publish left none (another publisher, a rollback, eager)."""
    headers = _request_headers(request)
    kwargs = getattr(request, "kwargs", None) or {}
    delivery = getattr(request, "delivery_info", None) or {}
    now = timezone.now()
    _insert_unless_present(
        task_id=task_id,
        name=name[:255],
        queue=str(delivery.get("routing_key") or "")[:100],
        organization_id=organization_id_from(headers=headers, kwargs=kwargs),
        args=_jsonable(list(getattr(request, "args", None) or []), fallback=[]),
        kwargs=_jsonable(dict(kwargs), fallback={}),
        state=state,
        triggered_by=triggered_by_from(headers),
        retry_of=str(headers.get(RETRY_OF_HEADER) or "")[:255],
        retries=getattr(request, "retries", 0) or 0,
        queued_at=now,
        updated_at=now,
    )


# What task_started decided about a delivery.
RUN, CANCELLED, DUPLICATE = "run", "cancelled", "duplicate"


def _claim_start(task_id: str, values: dict[str, Any], *, redelivered: bool, retries: int) -> int:
    """UPDATE the row to STARTED if this delivery may run it; the number of rows changed.

    A queued (PENDING) or retrying (RETRY) task may start. A running one only for a
    redelivery (its worker died) or a later retry; a finished or revoked one never.
    So a second copy of a message (the outbox re-published a task whose first copy
    survived a failover; a publish retried after the write had landed) does nothing.
    """
    extra = (
        task_id,
        TaskState.PENDING,
        TaskState.RETRY,
        TaskState.STARTED,
        TaskState.PROGRESS,
        redelivered,
        retries,
    )
    return _execute("start", values, extra)


@_ledger_write
def task_started(*, task_id: str, name: str, request: Any) -> str:
    """Mark the task STARTED on this worker if this delivery may run it.

    RUN, or CANCELLED (a person revoked it before it started), or DUPLICATE (it already
    started or finished from another copy of its message: this one must do nothing).
    """
    now = timezone.now()
    redelivered = bool((getattr(request, "delivery_info", None) or {}).get("redelivered"))
    retries = getattr(request, "retries", 0) or 0
    fields = {
        "state": TaskState.STARTED,
        "worker": (getattr(request, "hostname", None) or "")[:255],
        "retries": getattr(request, "retries", 0) or 0,
        "started_at": now,
        "finished_at": None,
        "runtime": None,
        "updated_at": now,
    }
    if _claim_start(task_id, fields, redelivered=redelivered, retries=retries):
        return RUN
    state = TaskRecord.objects.filter(task_id=task_id).values_list("state", flat=True).first()
    if state == TaskState.REVOKED:
        return CANCELLED
    if state is None:
        _record_from_request(task_id=task_id, name=name, request=request, state=TaskState.STARTED)
        _update_unless_revoked(task_id, **fields)
        return RUN
    logger.info("task %s %s is already %s: this copy of it does nothing", name, task_id, state)
    return DUPLICATE


@_ledger_write
def task_replaced(*, task_id: str) -> None:
    """A task is about to replace itself (a batch's next slice, same task id): its row goes
    back to PENDING so the replacement message may start it, progress kept."""
    TaskRecord.objects.filter(
        task_id=task_id, state__in=[TaskState.STARTED, TaskState.PROGRESS]
    ).update(state=TaskState.PENDING, updated_at=timezone.now())


@_ledger_write
def task_progressed(*, task_id: str, done: int, total: int, message: str) -> None:
    """Record a PROGRESS report of a running task."""
    TaskRecord.objects.filter(
        task_id=task_id, state__in=[TaskState.STARTED, TaskState.PROGRESS]
    ).update(
        state=TaskState.PROGRESS,
        progress={"done": done, "total": total, "message": message[:500]},
        updated_at=timezone.now(),
    )


def _runtime(started: float | None) -> float | None:
    """Seconds since `started` (a time.time() taken when the attempt started)."""
    if started is None:
        return None
    return max(0.0, time.time() - started)


def _success_values(*, result: Any, started: float | None) -> dict[str, Any]:
    now = timezone.now()
    return {
        "state": TaskState.SUCCESS,
        "result": result_summary(result),
        "error": "",
        "finished_at": now,
        "runtime": _runtime(started),
        "updated_at": now,
    }


@_ledger_write
def task_succeeded(*, task_id: str, result: Any, started: float | None) -> None:
    """Record success with a summary of the return value and the attempt's runtime."""
    _update_unless_revoked(task_id, **_success_values(result=result, started=started))


def task_succeeded_statement(
    *, task_id: str, result: Any, started: float | None
) -> tuple[str, list[Any]]:
    """task_succeeded's UPDATE as SQL and parameters, for a caller that sends it with its own.

    The result backend sends it in the round trip that stores the result row
    (taskops/results.py), so a successful task costs the database one statement less.
    """
    values = _success_values(result=result, started=started)
    sql, fields = _statement("update", tuple(values), connection.vendor)
    params = [field.get_db_prep_save(values[field.attname], connection) for field in fields]
    return sql, [*params, task_id, TaskState.REVOKED]


def _attempt(*, number: int, exc: Any, tb: str, retry_at: datetime | None = None) -> dict[str, Any]:
    return {
        "attempt": number,
        "error": error_text(exc),
        "traceback": tb[-MAX_TRACEBACK_CHARS:],
        "failed_at": timezone.now().isoformat(),
        "retry_at": retry_at.isoformat() if retry_at else None,
    }


def _append_attempt(*, task_id: str, attempt: dict[str, Any], **fields: Any) -> None:
    """Add a failed attempt to the row and set `fields` (one task runs in one place at a time)."""
    record = TaskRecord.objects.filter(task_id=task_id).only("attempts", "state").first()
    if record is None or record.state == TaskState.REVOKED:
        return
    attempts = [
        a
        for a in (record.attempts or [])
        if a.get("attempt") != attempt["attempt"] or a.get("worker_lost")
    ]
    TaskRecord.objects.filter(task_id=task_id).exclude(state=TaskState.REVOKED).update(
        attempts=[*attempts, attempt], updated_at=timezone.now(), **fields
    )


@_ledger_write
def task_redelivered(*, task_id: str, retries: int) -> int:
    """Record a delivery that follows a lost one; how many deliveries were lost so far.

    Each lost delivery is kept as a failed attempt marked `worker_lost`, so the count
    survives any number of worker crashes and the API shows them.
    """
    with transaction.atomic():
        record = (
            TaskRecord.objects.select_for_update()
            .filter(task_id=task_id)
            .only("attempts", "state")
            .first()
        )
        if record is None or record.state == TaskState.REVOKED:
            return 0
        attempts = list(record.attempts or [])
        lost = sum(1 for a in attempts if a.get("worker_lost")) + 1
        entry = _attempt(
            number=retries + 1,
            exc=f"WorkerLostError: the worker died running delivery {lost} of this task",
            tb="",
        )
        TaskRecord.objects.filter(pk=record.pk).update(
            attempts=[*attempts, {**entry, "worker_lost": True}], updated_at=timezone.now()
        )
    return lost


@_ledger_write
def task_will_retry(*, task_id: str, request: Any, exc: Any, tb: str, when: Any) -> None:
    """Record a failed attempt that will be retried (RETRY until the next attempt starts)."""
    retries = getattr(request, "retries", 0) or 0
    retry_at = None
    if isinstance(when, datetime):
        retry_at = when if timezone.is_aware(when) else when.replace(tzinfo=UTC)
    elif isinstance(when, int | float):
        retry_at = timezone.now() + timedelta(seconds=when)
    _append_attempt(
        task_id=task_id,
        attempt=_attempt(number=retries + 1, exc=exc, tb=tb, retry_at=retry_at),
        state=TaskState.RETRY,
        retries=retries + 1,
        eta=retry_at,
        error=error_text(exc),
        traceback=tb[-MAX_TRACEBACK_CHARS:],
    )


@_ledger_write
def task_failed(*, task_id: str, retries: int, exc: Any, tb: str, started: float | None) -> None:
    """Record the final failure with its error and traceback (kept with every earlier attempt)."""
    _append_attempt(
        task_id=task_id,
        attempt=_attempt(number=retries + 1, exc=exc, tb=tb),
        state=TaskState.FAILURE,
        error=error_text(exc),
        traceback=tb[-MAX_TRACEBACK_CHARS:],
        finished_at=timezone.now(),
        runtime=_runtime(started),
    )


@_ledger_write
def task_revoked(*, task_id: str, terminated: bool, signum: Any, expired: bool) -> None:
    """Record a revoke the worker carried out (terminated, skipped or expired)."""
    if expired:
        reason = "expired before it ran"
    elif terminated:
        reason = f"terminated by the worker ({signum})"
    else:
        reason = "revoked before it ran"
    now = timezone.now()
    rows = TaskRecord.objects.filter(task_id=task_id).exclude(
        state__in=[TaskState.SUCCESS, TaskState.FAILURE]
    )
    rows.filter(revoked_by="").update(
        state=TaskState.REVOKED, error=reason, finished_at=now, updated_at=now
    )
    # Cancelled by a person: keep who and why, and add what the worker did.
    rows.exclude(revoked_by="").exclude(error__endswith=reason).update(
        error=Concat(F("error"), Value(f"; {reason}")), updated_at=now
    )


def task_mark_revoked(*, task_id: str, revoked_by: str, reason: str) -> int:
    """Mark a task that is still queued or running REVOKED at a person's request."""
    now = timezone.now()
    return TaskRecord.objects.filter(task_id=task_id, state__in=ACTIVE_STATES).update(
        state=TaskState.REVOKED,
        revoked_by=revoked_by[:255],
        error=reason[:MAX_ERROR_CHARS],
        finished_at=now,
        updated_at=now,
    )


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback_module.format_exception(type(exc), exc, exc.__traceback__))
