"""Health of the task system: database, broker, workers, beat and queue depths.

Each check answers {"ok": bool | None, ...}; None means it could not be checked because
another dependency is down (workers are not asked when the broker is unreachable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection
from django.utils import timezone

from taskops.models import Heartbeat, SchedulerLease
from taskops.selectors import task_failure_count

logger = logging.getLogger(__name__)

# Seconds to wait for workers' replies to a broadcast (ping / inspect).
INSPECT_TIMEOUT = 1.0
BROKER_TIMEOUT = 3


def required_queues() -> list[str]:
    """Queues that need at least one worker: the default queue and every routed one."""
    queues = {settings.CELERY_TASK_DEFAULT_QUEUE}
    for route in settings.CELERY_TASK_ROUTES.values():
        if isinstance(route, dict) and route.get("queue"):
            queues.add(route["queue"])
    return sorted(queues)


def check_database() -> dict[str, Any]:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means the database is not usable
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 2)}


def queue_depths(conn: Any, queues: Iterable[str]) -> dict[str, int] | None:
    """Messages waiting per queue: Redis list lengths (all priorities) or files in the folder.

    None for transports where declaring a queue to count it could change the broker.
    """
    if conn.transport.driver_type not in ("redis", "filesystem"):
        return None
    channel = conn.default_channel
    # On these virtual transports a (non-passive) declare only counts: LLEN per priority
    # list on Redis, matching files on the filesystem broker.
    return {queue: int(channel.queue_declare(queue=queue).message_count) for queue in queues}


def check_broker_and_workers(
    *, timeout: float = INSPECT_TIMEOUT
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(broker, workers, queues) checks, sharing one broker connection."""
    queues = required_queues()
    started = time.monotonic()
    try:
        with current_app.connection_for_read() as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT
            )
            broker = {
                "ok": True,
                "transport": conn.transport.driver_type,
                "latency_ms": round((time.monotonic() - started) * 1000, 2),
            }
            depths = queue_depths(conn, queues)
            replies = (
                current_app.control.inspect(timeout=timeout, connection=conn).active_queues() or {}
            )
    except Exception as exc:  # kombu raises driver-specific errors for an unreachable broker
        logger.warning("health: broker unreachable: %s", exc)
        unknown = {"ok": None, "error": "not checked: the broker is unreachable"}
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}, unknown, unknown

    per_queue = {queue: 0 for queue in queues}
    for worker_queues in replies.values():
        for queue in worker_queues or []:
            name = queue.get("name") if isinstance(queue, dict) else None
            if name:
                per_queue[name] = per_queue.get(name, 0) + 1
    unserved = [queue for queue in queues if not per_queue.get(queue)]
    workers: dict[str, Any] = {
        "ok": bool(replies) and not unserved,
        "count": len(replies),
        "names": sorted(replies),
        "per_queue": per_queue,
    }
    if not replies:
        workers["error"] = f"no worker answered within {timeout:g}s"
    elif unserved:
        workers["error"] = f"no worker consumes {', '.join(unserved)}"
    depth_check: dict[str, Any] = {"ok": True, "depths": depths}
    if depths is None:
        depth_check["note"] = "queue depths are read on Redis and filesystem brokers only"
    return broker, workers, depth_check


def check_beat() -> dict[str, Any]:
    """Beat is alive when health_check_tasks ran lately or a beat renews the lease now.

    The heartbeat proves the whole path (beat sends, a worker runs, the database records);
    the lease, renewed on every tick, proves the beat process itself (and covers a
    deployment whose heartbeat schedule is missing or disabled).
    """
    max_age = settings.ZENITH_BEAT_HEARTBEAT_MAX_AGE
    now = timezone.now()
    try:
        heartbeat = Heartbeat.objects.filter(name="beat").first()
        lease = SchedulerLease.objects.filter(name="beat").first()
    except Exception as exc:  # the database check names the cause
        return {"ok": None, "error": f"not checked: {type(exc).__name__}: {exc}"}
    result: dict[str, Any] = {"max_age_seconds": max_age}
    heartbeat_fresh = lease_fresh = False
    if heartbeat is not None:
        age = (now - heartbeat.last_seen).total_seconds()
        heartbeat_fresh = age <= max_age
        result.update(last_heartbeat=heartbeat.last_seen.isoformat(), age_seconds=round(age, 1))
    if lease is not None and lease.renewed_at is not None:
        renewed = (now - lease.renewed_at).total_seconds()
        lease_fresh = lease.expires_at > now and renewed <= settings.ZENITH_BEAT_LEASE_SECONDS
        result.update(lease_holder=lease.holder, lease_renewed_seconds_ago=round(renewed, 1))
    if heartbeat_fresh or lease_fresh:
        return {**result, "ok": True}
    if heartbeat is None:
        error = "no heartbeat yet and no beat holds the lease: is beat running?"
    else:
        error = f"last heartbeat {result['age_seconds']:.0f}s ago and no beat holds the lease"
    return {**result, "ok": False, "error": error}


def health_report(*, timeout: float = INSPECT_TIMEOUT) -> tuple[bool, dict[str, Any]]:
    """(healthy, report); `report["failing"]` names every check that is not ok."""
    checks: dict[str, Any] = {"database": check_database()}
    broker, workers, queues = check_broker_and_workers(timeout=timeout)
    checks.update(broker=broker, workers=workers, beat=check_beat(), queues=queues)
    failing = [name for name, check in checks.items() if check.get("ok") is False]
    try:
        failures = task_failure_count()
    except Exception:  # the database check names the cause
        failures = None
    report = {
        "status": "unhealthy" if failing else "ok",
        "failing": failing,
        "checks": checks,
        "failures_last_hour": failures,
        "checked_at": timezone.now().isoformat(),
    }
    return not failing, report
