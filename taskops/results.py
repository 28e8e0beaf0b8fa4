"""The result backend: django-celery-results' table, one statement per result, awaited by pub/sub.

Results end in django-celery-results' TaskResult table, as before. Three things differ from
its DatabaseBackend:

- A result is written by one INSERT ... ON CONFLICT (task_id) DO UPDATE instead of a
  SELECT, then an INSERT in a savepoint or an UPDATE; on PostgreSQL it commits without
  waiting for the WAL flush, as the ledger's writes do (taskops/ledger.py says why).
- When Redis is configured (REDIS_URL, else a Redis broker), a final state is announced on
  the channel `zenith-result:<task_id>` with the result (when under 64 KB), and kept under
  the same key for ten minutes, as Celery's own Redis backend does. AsyncResult.get()
  subscribes, reads that key (a result stored before it subscribed), then waits for the
  notice instead of polling the table; it reads the row itself once a second, so a lost
  notice (Redis restarting) costs at most a second.
- A worker's success is stored with the task ledger's SUCCESS update in one round trip.
- A restarting PostgreSQL raises OperationalError (refused, shutting down, terminated);
  django-celery-results retries only InterfaceError. Both are treated as transient here:
  the broken connection is dropped and result_backend_always_retry backs off until the
  database is back.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

from celery import states
from celery.exceptions import TimeoutError as CeleryTimeoutError
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connections, router
from django.utils import timezone
from django_celery_results.backends.database import DatabaseBackend
from django_celery_results.models import TaskResult

from taskops.ledger import ASYNC_COMMIT

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "zenith-result:"
# A waiter re-reads the row at least this often, notice or not.
RECHECK_SECONDS = 1.0
# Larger results are not sent with the notice; the waiter reads them from the table.
MAX_NOTICE_BYTES = 64 * 1024
# How long a notice stays readable for a waiter that subscribes late (the row stays longer).
NOTICE_TTL_SECONDS = 10 * 60

_COLUMNS = (
    "task_id",
    "status",
    "result",
    "traceback",
    "meta",
    "content_encoding",
    "content_type",
    "periodic_task_name",
    "task_name",
    "task_args",
    "task_kwargs",
    "worker",
    "date_created",
    "date_done",
    "date_started",
)
# On conflict every column but these is replaced; date_started only when this write has one.
_KEPT_ON_CONFLICT = {"task_id", "date_created", "date_started"}


@functools.lru_cache(maxsize=4)
def _upsert_sql(vendor: str) -> tuple[str, tuple[Any, ...]]:
    """The upsert of one result row (PostgreSQL and SQLite both take ON CONFLICT DO UPDATE)."""
    quote_name = connections[router.db_for_write(TaskResult)].ops.quote_name
    meta = TaskResult._meta
    by_name = {field.name: field for field in meta.concrete_fields}
    fields = tuple(by_name[name] for name in _COLUMNS)
    table = quote_name(meta.db_table)
    columns = ", ".join(quote_name(field.column or field.attname) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    updates = [
        f"{quote_name(f.column or f.attname)} = EXCLUDED.{quote_name(f.column or f.attname)}"
        for f in fields
        if f.name not in _KEPT_ON_CONFLICT
    ]
    started = quote_name("date_started")
    updates.append(f"{started} = COALESCE(EXCLUDED.{started}, {table}.{started})")
    # Identifiers come from the model, values are parameters.
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({quote_name('task_id')}) DO UPDATE SET {', '.join(updates)}"
    )
    return sql, fields


def notify_url() -> str:
    """The Redis URL final states are announced on ('' when there is none)."""
    url = settings.REDIS_URL or settings.CELERY_BROKER_URL
    return url if url.startswith(("redis://", "rediss://", "unix://")) else ""


@functools.lru_cache(maxsize=1)
def _redis_client(url: str) -> Any:
    import redis

    # redis-py's pool notices a fork and opens new connections in the child.
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def result_channel(task_id: str) -> str:
    return f"{CHANNEL_PREFIX}{task_id}"


class ResultBackend(DatabaseBackend):
    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if isinstance(exc, InterfaceError | OperationalError):
            close_old_connections()
            return True
        return False

    # --------------------------------------------------------------------------
    # Writing
    # --------------------------------------------------------------------------
    def _store_result(
        self,
        task_id: str,
        result: Any,
        status: str,
        traceback: str | None = None,
        request: Any = None,
        using: str | None = None,
    ) -> Any:
        """Store return value and status of a task in one statement; announce a final state."""
        content_type, content_encoding, encoded = self.encode_content(result)
        meta = {
            **self._get_meta_from_request(request),
            "children": self.current_task_children(request),
        }
        _, _, encoded_meta = self.encode_content(meta)
        now = timezone.now()
        values = {
            "task_id": task_id,
            "status": status,
            "result": encoded,
            "meta": encoded_meta,
            "content_encoding": content_encoding,
            "content_type": content_type,
            "date_created": now,
            "date_done": now,
            "date_started": now if status == states.STARTED else None,
        }
        values.update(self._get_extended_properties(request, traceback))
        if values["traceback"] is None:
            values["traceback"] = traceback
        ledger = self._ledger_success(task_id, status, result, request)
        self._upsert(values, using, ledger=ledger)
        if ledger is not None:
            # The task_success receiver (taskops.receivers) has nothing left to write.
            request.zenith_success_recorded = True
        if status in states.READY_STATES:
            self._announce(task_id, status, result, traceback, request)
        return result

    def _ledger_success(
        self, task_id: str, status: str, result: Any, request: Any
    ) -> tuple[str, list[Any]] | None:
        """The ledger's SUCCESS update, to send with the result row (a worker's success only)."""
        if status != states.SUCCESS or not settings.ZENITH_TASK_LEDGER or request is None:
            return None
        if getattr(request, "id", None) != task_id or getattr(request, "is_eager", False):
            return None
        if getattr(request, "zenith_cancelled", False):
            return None
        from taskops import ledger

        return ledger.task_succeeded_statement(
            task_id=task_id, result=result, started=getattr(request, "zenith_started", None)
        )

    def _upsert(
        self, values: dict[str, Any], using: str | None, *, ledger: tuple[str, list[Any]] | None
    ) -> None:
        """Write the result row; with `ledger`, the ledger's update in the same round trip.

        On PostgreSQL both go as one simple-protocol query: one implicit transaction, so
        the result row and the ledger's SUCCESS commit together or not at all, and a retry
        of the write (result_backend_always_retry) repeats both, which is harmless: the
        upsert and the guarded UPDATE are idempotent.
        """
        connection = connections[using or router.db_for_write(TaskResult)]
        sql, fields = _upsert_sql(connection.vendor)
        params = [field.get_db_prep_save(values[field.name], connection) for field in fields]
        one_query = (
            connection.vendor == "postgresql"
            and not connection.in_atomic_block
            and not connection.settings_dict["OPTIONS"].get("server_side_binding")
        )
        with connection.cursor() as cursor:
            if one_query:
                statements, all_params = [ASYNC_COMMIT + sql], [*params]
                if ledger is not None:
                    statements.append(ledger[0])
                    all_params += ledger[1]
                cursor.execute("; ".join(statements), all_params)
                while cursor.nextset():
                    pass
            else:
                cursor.execute(sql, params)
                if ledger is not None:
                    cursor.execute(*ledger)

    def _announce(
        self, task_id: str, status: str, result: Any, traceback: str | None, request: Any
    ) -> None:
        """Publish the final state, with the result when small, to whoever waits for it."""
        url = notify_url()
        if not url:
            return
        import redis

        meta = {
            "task_id": task_id,
            "status": status,
            "result": result,
            "traceback": traceback,
            "children": self.current_task_children(request),
            "date_done": timezone.now().isoformat(),
        }
        try:
            payload = self.encode(meta)
        except Exception:  # an unserialisable result: the waiter reads the row instead
            payload = None
        if payload is None or len(payload) > MAX_NOTICE_BYTES:
            payload = self.encode({"task_id": task_id, "status": status})
        key = result_channel(task_id)
        try:
            # Kept a while under the channel's name for a waiter that subscribes after it.
            pipe = _redis_client(url).pipeline(transaction=False)
            pipe.set(key, payload, ex=NOTICE_TTL_SECONDS)
            pipe.publish(key, payload)
            pipe.execute()
        except redis.RedisError:
            # The row is written; a waiter finds it on its next read (within a second).
            logger.warning("could not announce the result of %s", task_id, exc_info=True)

    def _notice_data(self, data: Any) -> dict[str, Any] | None:
        """The task's meta from a notice that carries its result (else None: read the row)."""
        if not data:
            return None
        try:
            meta = self.decode_result(data)
        except Exception:  # a notice from another version: the row is the truth
            return None
        if not isinstance(meta, dict) or "result" not in meta:
            return None
        return meta if meta.get("status") in states.READY_STATES else None

    # --------------------------------------------------------------------------
    # Waiting
    # --------------------------------------------------------------------------
    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        no_ack: bool = True,
        on_interval: Any = None,
    ) -> dict[str, Any]:
        """Wait for a final state: woken by the worker's notice, not by polling the table."""
        self._ensure_not_eager()
        url = notify_url()
        if not url:
            return super().wait_for(
                task_id, timeout=timeout, interval=interval, no_ack=no_ack, on_interval=on_interval
            )
        import redis

        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = _redis_client(url).pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(result_channel(task_id))
        except redis.RedisError:
            pubsub.close()
            logger.warning("result notices unavailable; polling for %s", task_id, exc_info=True)
            return super().wait_for(
                task_id, timeout=timeout, interval=interval, no_ack=no_ack, on_interval=on_interval
            )
        client = _redis_client(url)
        next_read = time.monotonic()  # the table, the truth, is read at least once a second
        try:
            # A result stored before the subscription left its notice under the same key.
            notice = self._notice_data(client.get(result_channel(task_id)))
            if notice is not None:
                return notice
            next_read += RECHECK_SECONDS
        except redis.RedisError:
            pass
        try:
            while True:
                if time.monotonic() >= next_read:
                    meta = self.get_task_meta(task_id)
                    if meta["status"] in states.READY_STATES:
                        return meta
                    next_read = time.monotonic() + RECHECK_SECONDS
                    if on_interval:
                        on_interval()
                wait = max(0.0, next_read - time.monotonic())
                if deadline is not None:
                    if time.monotonic() >= deadline:
                        meta = self.get_task_meta(task_id)  # a last look at the truth
                        if meta["status"] in states.READY_STATES:
                            return meta
                        raise CeleryTimeoutError("The operation timed out.")
                    wait = min(wait, deadline - time.monotonic())
                try:
                    message = pubsub.get_message(timeout=wait)
                except redis.RedisError:
                    time.sleep(min(wait, interval))
                    continue
                if message and message.get("type") == "message":
                    notice = self._notice_data(message["data"])
                    if notice is not None:
                        return notice
                    next_read = time.monotonic()  # a notice without the result: read the row
        finally:
            pubsub.close()
