"""Writes of the task system: publishing, cancelling and retrying tasks, cleanup, schedules."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from taskops import ledger
from taskops.models import (
    ACTIVE_STATES,
    RUNNING_STATES,
    Heartbeat,
    ScheduleChange,
    ScheduleChangeAction,
    SchedulerLease,
    TaskRecord,
    TaskState,
)

logger = logging.getLogger(__name__)

# Message header naming who asked for a task: "user:<id>", "beat:<schedule>", or "system".
TRIGGERED_BY_HEADER = ledger.TRIGGERED_BY_HEADER

CLEANUP_BATCH_SIZE = 1000
STUCK_AFTER = timedelta(hours=24)
STUCK_STATES = (TaskState.PENDING, TaskState.STARTED, TaskState.PROGRESS)


class TaskStateConflict(Exception):
    """The task's state does not allow what was asked (retrying a success, cancelling a failure)."""


class TaskNotRegistered(TaskStateConflict):
    """A ledger row or a schedule names a task Zenith does not define: it is never sent."""


# Most tasks one bulk retry re-sends.
BULK_RETRY_CAP = 500


@functools.cache
def _tasks_discovered() -> bool:
    """Import every app's tasks module once (Celery's autodiscovery runs at worker start only)."""
    current_app.loader.import_default_modules()
    return True


def task_name_is_registered(name: str) -> bool:
    """Whether `name` is one of Zenith's tasks (registered with the app; Celery's own are not)."""
    _tasks_discovered()
    return bool(name) and not name.startswith("celery.") and name in current_app.tasks


def triggered_by_label(user: Any | None) -> str:
    """The triggered-by value for a person (or the system when there is none)."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return "system"


def task_enqueue(
    *,
    name: str,
    kwargs: dict[str, Any],
    triggered_by: str = "system",
    countdown: float | None = None,
    args: list[Any] | None = None,
    queue: str | None = None,
    organization_id: int | None = None,
    retry_of: str = "",
    record_now: bool = False,
) -> str:
    """Publish task `name` with JSON arguments once the current transaction commits; return its id.

    Tenant tasks pass `organization_id` in kwargs (or as `organization_id` here, sent as a
    header) so the ledger knows their organization. Outside a transaction the task is
    published at once, so a broker outage raises here. `queue` overrides the routing by name.
    `record_now` writes the PENDING ledger row in the current transaction instead of at
    publish time, for callers whose checks must see it before their locks are released.
    """
    task_id = str(uuid.uuid4())
    headers: dict[str, Any] = {TRIGGERED_BY_HEADER: triggered_by}
    if organization_id is not None:
        headers[ledger.ORGANIZATION_HEADER] = organization_id
    if retry_of:
        headers[ledger.RETRY_OF_HEADER] = retry_of
    options: dict[str, Any] = {"queue": queue} if queue else {}

    def send() -> None:
        try:
            current_app.send_task(
                name,
                args=list(args or []),
                kwargs=kwargs,
                task_id=task_id,
                countdown=countdown,
                headers=headers,
                **options,
            )
        except BrokerError as exc:
            # The publish signal already wrote a PENDING row; it will never run, so say so
            # (best effort: the caller must still see the broker error, not a ledger one).
            with contextlib.suppress(DatabaseError):
                ledger.task_failed(
                    task_id=task_id,
                    retries=0,
                    exc=exc,
                    tb=ledger.format_traceback(exc),
                    started=None,
                )
            raise

    if record_now:
        routed = current_app.amqp.router.route(dict(options), name, args or (), kwargs)
        ledger.task_published(
            task_id=task_id,
            name=name,
            queue=getattr(routed.get("queue"), "name", "") or queue or "",
            args=args,
            kwargs=kwargs,
            headers=headers,
        )
    transaction.on_commit(send)
    return task_id


def task_cancel(*, record: TaskRecord, user: Any | None) -> TaskRecord:
    """Revoke a queued or running task (a running one is terminated); it becomes REVOKED.

    Workers that are up drop or terminate it at once; the ledger state also stops a worker
    that starts later from running it (see taskops.receivers).
    """
    if record.state not in ACTIVE_STATES:
        raise TaskStateConflict(
            f"the task is {record.state}; only a queued or running task can be cancelled"
        )
    label = triggered_by_label(user)
    # terminate=True also covers a task that started since the ledger said PENDING;
    # for one still queued it only adds the id to the workers' revoked set.
    current_app.control.revoke(record.task_id, terminate=True, signal="SIGTERM")
    was_running = record.state in RUNNING_STATES
    updated = ledger.task_mark_revoked(
        task_id=record.task_id,
        revoked_by=label,
        reason=f"cancelled by {label} while {record.state}",
    )
    record.refresh_from_db()
    if not updated and record.state != TaskState.REVOKED:
        raise TaskStateConflict(f"the task finished ({record.state}) before it could be cancelled")
    logger.info(
        "task %s %s cancelled by %s (running: %s)", record.name, record.task_id, label, was_running
    )
    return record


def task_retry(*, record: TaskRecord, user: Any | None) -> str:
    """Run a failed or revoked task again with the same name and arguments; return the new id.

    Only Zenith's registered tasks are re-sent: a ledger row's name is whatever a message
    said, and retrying must not become a way to send an arbitrary task name.
    """
    if not task_name_is_registered(record.name):
        raise TaskNotRegistered(f"{record.name!r} is not a registered Zenith task")
    with transaction.atomic():
        # Two retries of one task (two operators, two bulk requests) queue one: the
        # original's row is locked while the check runs and the retry's row is written.
        record = TaskRecord.objects.select_for_update().get(pk=record.pk)
        if record.state not in (TaskState.FAILURE, TaskState.REVOKED):
            raise TaskStateConflict(
                f"the task is {record.state}; only a FAILURE or REVOKED task can be retried"
            )
        pending = (
            TaskRecord.objects.filter(retry_of=record.task_id, state__in=ACTIVE_STATES)
            .values_list("task_id", flat=True)
            .first()
        )
        if pending:
            raise TaskStateConflict(f"the task is already being retried as {pending}")
        return task_enqueue(
            name=record.name,
            args=list(record.args or []),
            kwargs=dict(record.kwargs or {}),
            triggered_by=triggered_by_label(user),
            queue=record.queue or None,
            organization_id=record.organization_id,
            retry_of=record.task_id,
            record_now=True,
        )


@dataclass
class BulkRetryReport:
    """What one bulk retry did: re-sent tasks (new id, original) and skipped ones (why)."""

    retried: list[dict[str, str]]
    skipped: list[dict[str, str]]
    # A dry run: the ids that would be retried.
    would_retry: list[str] = field(default_factory=list)


def task_retry_many(
    *,
    records: list[TaskRecord],
    user: Any | None,
    operable_organization_ids: set[int] | None,
    missing: Sequence[str] = (),
    dry_run: bool = False,
) -> BulkRetryReport:
    """Retry each record that the caller operates and that is FAILURE or REVOKED.

    `operable_organization_ids` are the organizations where the caller is an operator (None:
    every one, a superuser). Tasks with no organization need staff. `missing` ids are
    reported as "no such task", the same for ids that exist elsewhere, so nothing leaks.
    A broker outage stops the run: the rest are skipped, and if nothing was sent it raises.
    """
    report = BulkRetryReport(retried=[], skipped=[])
    staff = bool(getattr(user, "is_staff", False) or getattr(user, "is_superuser", False))
    broker_down: BrokerError | None = None
    for record in records:

        def skip(reason: str, record: TaskRecord = record) -> None:
            report.skipped.append({"task_id": record.task_id, "reason": reason})

        if broker_down is not None:
            skip(f"the task queue is unavailable ({broker_down})")
            continue
        if record.organization_id is None:
            allowed = staff
        else:
            allowed = (
                operable_organization_ids is None
                or record.organization_id in operable_organization_ids
            )
        if not allowed:
            skip("this needs the operator role in the task's organization")
            continue
        if record.state not in (TaskState.FAILURE, TaskState.REVOKED):
            skip(f"the task is {record.state}; only a FAILURE or REVOKED task can be retried")
            continue
        if dry_run:
            if not task_name_is_registered(record.name):
                skip(f"{record.name!r} is not a registered Zenith task")
            else:
                report.would_retry.append(record.task_id)
            continue
        try:
            new_id = task_retry(record=record, user=user)
        except TaskStateConflict as exc:
            skip(str(exc))
        except BrokerError as exc:
            broker_down = exc
            skip(f"the task queue is unavailable ({exc})")
        else:
            report.retried.append({"task_id": new_id, "retry_of": record.task_id})
    if broker_down is not None and not report.retried:
        raise broker_down
    report.skipped.extend({"task_id": task_id, "reason": "no such task"} for task_id in missing)
    return report


def heartbeat_record(*, name: str, details: dict[str, Any] | None = None) -> Heartbeat:
    """Record that `name` is alive now."""
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"last_seen": timezone.now(), "details": details or {}}
    )
    return heartbeat


# ------------------------------------------------------------------------------
# Cleanup
# ------------------------------------------------------------------------------
def _delete_in_batches(queryset: models.QuerySet[Any], *, batch_size: int, walk: str = "pk") -> int:
    """Delete the rows of `queryset` a batch of primary keys at a time; return how many.

    `walk` is the indexed column the queryset's cutoff is on (`queued_at < cutoff`): each
    batch is the next one along that index, from where the previous batch ended, so no
    batch re-reads the entries of rows already deleted (dead until vacuum), and the last,
    empty look costs one index probe, not a walk of the whole table in primary-key order.
    """
    deleted = 0
    model = queryset.model
    remaining = queryset
    while True:
        batch = list(remaining.order_by(walk, "pk").values_list("pk", walk)[:batch_size])
        if not batch:
            return deleted
        count, _ = model._default_manager.filter(pk__in=[pk for pk, _ in batch]).delete()
        deleted += count
        remaining = queryset.filter(**{f"{walk}__gte": batch[-1][1]})


# Other apps' retention jobs run with the hourly cleanup:
# {name: (*, batch_size) -> rows removed}.
# Registered in their AppConfig.ready, so taskops imports none of them.
_cleanups: dict[str, Callable[..., int]] = {}


def cleanup_register(name: str, cleanup: Callable[..., int]) -> None:
    """Run ``cleanup`` in ``cleanup_old_task_results``; its count is reported under ``name``."""
    _cleanups[name] = cleanup


def task_records_cleanup(*, batch_size: int = CLEANUP_BATCH_SIZE) -> dict[str, int]:
    """Delete ledger rows older than ZENITH_TASK_RETENTION_DAYS and expired result rows,
    then run the registered cleanups of other apps (e.g. raw e-mail past its retention).

    In batches, so neither a million rows in memory nor one long-locking statement.
    """
    from django_celery_results.models import GroupResult, TaskResult

    now = timezone.now()
    cutoff = now - timedelta(days=settings.ZENITH_TASK_RETENTION_DAYS)
    results_cutoff = now - timedelta(seconds=_result_expires_seconds())
    report = {
        "ledger": _delete_in_batches(
            TaskRecord.objects.filter(queued_at__lt=cutoff), batch_size=batch_size, walk="queued_at"
        ),
        "results": _delete_in_batches(
            TaskResult.objects.filter(date_done__lt=results_cutoff),
            batch_size=batch_size,
            walk="date_done",
        ),
        "group_results": _delete_in_batches(
            GroupResult.objects.filter(date_done__lt=results_cutoff),
            batch_size=batch_size,
            walk="date_done",
        ),
    }
    for name, cleanup in _cleanups.items():
        report[name] = cleanup(batch_size=batch_size)
    return report


def _result_expires_seconds() -> float:
    expires = current_app.conf.result_expires
    if isinstance(expires, timedelta):
        return expires.total_seconds()
    return float(expires or 24 * 60 * 60)


def task_records_fail_stuck(*, older_than: timedelta = STUCK_AFTER) -> dict[str, int]:
    """Mark tasks that have shown no sign of life in PENDING/STARTED/PROGRESS as FAILURE.

    A task with a future ETA (a countdown or a pending retry) is waiting, not stuck.
    """
    now = timezone.now()
    cutoff = now - older_than
    hours = older_than.total_seconds() / 3600
    counts = {}
    for state in STUCK_STATES:
        counts[state.value] = (
            TaskRecord.objects.filter(state=state, updated_at__lt=cutoff)
            .exclude(eta__gt=now)
            .update(
                state=TaskState.FAILURE,
                error=f"stuck in {state.value} for over {hours:g} hours; "
                "marked failed by cleanup_failed_tasks",
                finished_at=now,
                updated_at=now,
            )
        )
    return counts


# ------------------------------------------------------------------------------
# Outbox: queued tasks whose message the broker lost are published again
# ------------------------------------------------------------------------------
OUTBOX_SCAN_CHUNK = 1000


def _broker_queued_ids(conn: Any, queues: list[str]) -> set[str]:
    """Ids of the task messages waiting in these queues (every priority list) on Redis."""
    channel = conn.default_channel
    client = channel.client
    ids: set[str] = set()
    for queue in queues:
        for priority in channel.priority_steps:
            key = channel._q_for_pri(queue, priority)
            start = 0
            while chunk := client.lrange(key, start, start + OUTBOX_SCAN_CHUNK - 1):
                for raw in chunk:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        task_id = json.loads(raw).get("headers", {}).get("id")
                        if task_id:
                            ids.add(str(task_id))
                start += len(chunk)
    return ids


def _broker_held_ids(conn: Any, *, delivered_since: float) -> set[str]:
    """Ids of the messages a worker took from Redis since then and has not acked yet.

    kombu keeps each delivered message in the `unacked` hash, indexed by delivery time, until
    the worker acks it. A recent entry is in a worker's hands; an old one whose task never
    started belongs to a worker that lost its connection (a failover) and dropped it.
    """
    channel = conn.default_channel
    client = channel.client
    tags = client.zrangebyscore(channel.unacked_index_key, delivered_since, "+inf")
    ids: set[str] = set()
    for start in range(0, len(tags), OUTBOX_SCAN_CHUNK):
        for raw in client.hmget(channel.unacked_key, tags[start : start + OUTBOX_SCAN_CHUNK]):
            with contextlib.suppress(ValueError, TypeError, AttributeError, IndexError):
                task_id = json.loads(raw)[0].get("headers", {}).get("id")
                if task_id:
                    ids.add(str(task_id))
    return ids


def task_records_republish_lost(
    *, grace_seconds: float | None = None, limit: int = 10_000
) -> dict[str, int]:
    """Publish again the queued tasks whose message is no longer in the broker; how many.

    The ledger is the outbox: every published task has a PENDING row until a worker starts
    it. A Redis failover loses what the old primary had not yet replicated (and a restart
    without persistence loses everything queued), and a worker whose connection broke drops
    the messages it had taken but not started, while the rows stay PENDING. A row that has
    been PENDING for `grace_seconds` (ZENITH_OUTBOX_GRACE_SECONDS), whose id is in no queue
    and was not taken by a worker within that time, is published again under the same id.
    A copy that was not lost after all makes no difference: the ledger lets one copy run
    (ledger.task_started).
    Only Redis brokers are read; on others nothing is done.
    """
    grace = settings.ZENITH_OUTBOX_GRACE_SECONDS if grace_seconds is None else grace_seconds
    queues = sorted(
        set(
            TaskRecord.objects.filter(state=TaskState.PENDING)
            .exclude(queue="")
            .values_list("queue", flat=True)
            .distinct()
        )
        | {settings.CELERY_TASK_DEFAULT_QUEUE}
    )
    outcome = {"checked": 0, "republished": 0}
    now = timezone.now()
    cutoff = now - timedelta(seconds=grace)
    candidates = list(
        TaskRecord.objects.filter(state=TaskState.PENDING, updated_at__lt=cutoff)
        .filter(Q(eta__isnull=True) | Q(eta__lte=now))
        .order_by("queued_at")[:limit]
    )
    if not candidates:
        return outcome
    with current_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        if conn.transport.driver_type != "redis":
            return outcome
        # Rows first, then the queues, then what workers hold: a message moves from a queue
        # to the unacked hash, so one popped between the reads is found in the second, and
        # one that started meanwhile is no longer PENDING when it is claimed below.
        present = _broker_queued_ids(conn, queues)
        present |= _broker_held_ids(conn, delivered_since=time.time() - grace)
    for record in candidates:
        outcome["checked"] += 1
        if record.task_id in present:
            continue
        # Claim it for one grace period, so two sweeps at once publish it once.
        claimed = TaskRecord.objects.filter(
            pk=record.pk, state=TaskState.PENDING, updated_at=record.updated_at
        ).update(updated_at=now)
        if not claimed:
            continue
        headers: dict[str, Any] = {TRIGGERED_BY_HEADER: record.triggered_by or "system"}
        if record.organization_id is not None:
            headers[ledger.ORGANIZATION_HEADER] = record.organization_id
        if record.retry_of:
            headers[ledger.RETRY_OF_HEADER] = record.retry_of
        options: dict[str, Any] = {"queue": record.queue} if record.queue else {}
        current_app.send_task(
            record.name,
            args=list(record.args or []),
            kwargs=dict(record.kwargs or {}),
            task_id=record.task_id,
            headers=headers,
            **options,
        )
        outcome["republished"] += 1
    if outcome["republished"]:
        logger.warning(
            "outbox: published %d queued tasks again whose message the broker had lost",
            outcome["republished"],
        )
    return outcome


# ------------------------------------------------------------------------------
# Beat: the lease that lets one beat send
# ------------------------------------------------------------------------------
def scheduler_lease_acquire(*, name: str, holder: str, seconds: float) -> bool:
    """Take or renew the lease `name` for `holder`; False while another holder's lease runs.

    Each step is one conditional UPDATE, atomic on PostgreSQL and SQLite alike.
    """
    now = timezone.now()
    expires = now + timedelta(seconds=seconds)
    lease = SchedulerLease.objects.filter(name=name)
    if lease.filter(holder=holder, expires_at__gt=now).update(expires_at=expires, renewed_at=now):
        return True
    if lease.filter(Q(holder=holder) | Q(expires_at__lte=now)).update(
        holder=holder, expires_at=expires, acquired_at=now, renewed_at=now
    ):
        return True
    if lease.exists():
        return False
    try:
        with transaction.atomic():
            SchedulerLease.objects.create(
                name=name, holder=holder, expires_at=expires, acquired_at=now, renewed_at=now
            )
    except IntegrityError:
        return False  # another beat created it first
    return True


def scheduler_lease_release(*, name: str, holder: str) -> None:
    """Give the lease up at once (a clean shutdown), so a standby need not wait it out."""
    SchedulerLease.objects.filter(name=name, holder=holder).update(expires_at=timezone.now())


# ------------------------------------------------------------------------------
# Default schedules (README, "Schedules"): `manage.py setup_periodic_tasks`
# ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DefaultSchedule:
    name: str
    task: str
    description: str
    # (every, period) of an IntervalSchedule, e.g. (5, "minutes"); or a crontab.
    interval: tuple[int, str] | None = None
    crontab: dict[str, str] | None = None


DEFAULT_SCHEDULES = (
    DefaultSchedule(
        name="Slack sync",
        task="integrations.tasks.sync_slack_tickets",
        description="Pull new Slack messages of every enabled channel into tickets.",
        interval=(5, "minutes"),
    ),
    DefaultSchedule(
        name="E-mail sync",
        task="integrations.tasks.process_email_tickets",
        description="Turn new mail of every enabled mailbox into tickets.",
        interval=(10, "minutes"),
    ),
    DefaultSchedule(
        name="Clean up old task results",
        task="taskops.tasks.cleanup_old_task_results",
        description="Delete ledger rows past the retention period and expired results.",
        interval=(1, "hours"),
    ),
    DefaultSchedule(
        name="Fail stuck tasks",
        task="taskops.tasks.cleanup_failed_tasks",
        description="Mark tasks stuck in PENDING/STARTED/PROGRESS for over 24 h as FAILURE.",
        interval=(1, "hours"),
    ),
    DefaultSchedule(
        name="Train all organizations",
        task="mlmodels.tasks.train_all_organizations_task",
        description="Retrain every organization's models (promoted only when not worse).",
        crontab={"minute": "0", "hour": "3"},
    ),
    DefaultSchedule(
        name="Health check heartbeat",
        task="taskops.tasks.health_check_tasks",
        description="Record beat's heartbeat; tasks/health reports beat down when it is old.",
        interval=(1, "minutes"),
    ),
    DefaultSchedule(
        name="Republish lost tasks",
        task="taskops.tasks.republish_lost_tasks",
        description="Publish again queued tasks whose message the broker lost (a failover).",
        interval=(1, "minutes"),
    ),
    DefaultSchedule(
        name="Evaluate alert rules",
        task="taskops.tasks.evaluate_alert_rules",
        description="Open and close alert incidents; queue their Slack and e-mail messages.",
        interval=(1, "minutes"),
    ),
)


def _first_or_create(model: type[models.Model], **fields: Any) -> Any:
    """A schedule row with these values (django-celery-beat allows duplicates), made if none."""
    return model._default_manager.filter(**fields).first() or model._default_manager.create(
        **fields
    )


def periodic_tasks_setup(
    *, reset: bool = False, log: Callable[[str], None] | None = None
) -> dict[str, list[str]]:
    """Create the default schedules that are missing (all of them with `reset`); idempotent.

    Existing rows keep their admin edits unless `reset` restores the defaults.
    """
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    outcome: dict[str, list[str]] = {"created": [], "reset": [], "kept": []}
    with transaction.atomic():
        for default in DEFAULT_SCHEDULES:
            existing = PeriodicTask.objects.filter(name=default.name).first()
            if existing is not None and not reset:
                outcome["kept"].append(default.name)
                continue
            fields: dict[str, Any] = {
                "task": default.task,
                "description": default.description,
                "headers": json.dumps({TRIGGERED_BY_HEADER: f"beat:{default.name}"}),
                "args": "[]",
                "kwargs": "{}",
                "enabled": True,
                "interval": None,
                "crontab": None,
            }
            if default.interval is not None:
                every, period = default.interval
                fields["interval"] = _first_or_create(IntervalSchedule, every=every, period=period)
            else:
                fields["crontab"] = _first_or_create(
                    CrontabSchedule,
                    **(default.crontab or {}),
                    day_of_week="*",
                    day_of_month="*",
                    month_of_year="*",
                    timezone=settings.TIME_ZONE,
                )
            PeriodicTask.objects.update_or_create(name=default.name, defaults=fields)
            outcome["reset" if existing is not None else "created"].append(default.name)
    if log is not None:
        for kind, names in outcome.items():
            for name in names:
                log(f"{kind}: {name}")
    return outcome


# ------------------------------------------------------------------------------
# Schedules: changes over the API and the admin, each one recorded
# ------------------------------------------------------------------------------
CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year", "timezone")


def _json_or_text(text: str | None, empty: Any) -> Any:
    try:
        return json.loads(text) if text else empty
    except ValueError:
        return text


def schedule_snapshot(periodic: Any) -> dict[str, Any]:
    """The editable fields of a PeriodicTask as JSON: what a change record's before/after hold."""
    interval = periodic.interval
    crontab = periodic.crontab
    return {
        "name": periodic.name,
        "task": periodic.task,
        "enabled": periodic.enabled,
        "description": periodic.description,
        "interval": {"every": interval.every, "period": interval.period} if interval else None,
        "crontab": (
            {name: str(getattr(crontab, name)) for name in CRONTAB_FIELDS} if crontab else None
        ),
        "args": _json_or_text(periodic.args, []),
        "kwargs": _json_or_text(periodic.kwargs, {}),
        "queue": periodic.queue or "",
        "one_off": periodic.one_off,
    }


def schedule_change_record(
    *,
    periodic: Any,
    action: str,
    user: Any | None,
    source: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> ScheduleChange:
    """Write who changed which schedule how (before/after snapshots)."""
    return ScheduleChange.objects.create(
        periodic_task_id=periodic.pk,
        periodic_task_name=periodic.name,
        action=action,
        actor=triggered_by_label(user),
        actor_username=getattr(user, "username", "") or "",
        source=source,
        before=before,
        after=after,
    )


def schedule_update(
    *, periodic_id: int, changes: dict[str, Any], user: Any | None, source: str
) -> Any:
    """Apply validated `changes` to a schedule and record them; unchanged saves record nothing.

    `changes` may hold enabled, description, args (list), kwargs (dict), interval
    ({every, period}) or crontab ({minute, hour, ...}); a new interval or crontab replaces
    whatever schedule the task had. Beat picks the change up through django-celery-beat's
    change tracking (PeriodicTask.save).
    """
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    with transaction.atomic():
        periodic = (
            PeriodicTask.objects.select_for_update(of=("self",))
            .select_related("interval", "crontab")
            .get(pk=periodic_id)
        )
        before = schedule_snapshot(periodic)
        for name in ("enabled", "description"):
            if name in changes:
                setattr(periodic, name, changes[name])
        for name in ("args", "kwargs"):
            if name in changes:
                setattr(periodic, name, json.dumps(changes[name]))
        if changes.get("interval") is not None:
            periodic.interval = _first_or_create(IntervalSchedule, **changes["interval"])
            periodic.crontab = periodic.solar = periodic.clocked = None
        if changes.get("crontab") is not None:
            crontab = {"timezone": settings.TIME_ZONE, **changes["crontab"]}
            periodic.crontab = _first_or_create(CrontabSchedule, **crontab)
            periodic.interval = periodic.solar = periodic.clocked = None
        periodic.save()
        after = schedule_snapshot(periodic)
        if after != before:
            schedule_change_record(
                periodic=periodic,
                action=ScheduleChangeAction.CHANGED,
                user=user,
                source=source,
                before=before,
                after=after,
            )
    return periodic


def schedule_run(*, periodic: Any, user: Any | None, source: str) -> str:
    """Send a schedule's task now with its arguments and queue; record it; return the task id."""
    if not task_name_is_registered(periodic.task):
        raise TaskNotRegistered(f"{periodic.task!r} is not a registered Zenith task")
    args = _json_or_text(periodic.args, [])
    kwargs = _json_or_text(periodic.kwargs, {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise TaskStateConflict("the schedule's args or kwargs are not valid JSON")
    task_id = task_enqueue(
        name=periodic.task,
        args=args,
        kwargs=kwargs,
        queue=periodic.queue or None,
        triggered_by=triggered_by_label(user),
    )
    schedule_change_record(
        periodic=periodic,
        action=ScheduleChangeAction.RUN,
        user=user,
        source=source,
        before=None,
        after={"task_id": task_id},
    )
    return task_id
