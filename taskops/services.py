"""Writes of the task system: publishing, cancelling and retrying tasks, cleanup, schedules."""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
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
) -> str:
    """Publish task `name` with JSON arguments once the current transaction commits; return its id.

    Tenant tasks pass `organization_id` in kwargs (or as `organization_id` here, sent as a
    header) so the ledger knows their organization. Outside a transaction the task is
    published at once, so a broker outage raises here. `queue` overrides the routing by name.
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
    """Run a failed or revoked task again with the same name and arguments; return the new id."""
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
    )


def heartbeat_record(*, name: str, details: dict[str, Any] | None = None) -> Heartbeat:
    """Record that `name` is alive now."""
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"last_seen": timezone.now(), "details": details or {}}
    )
    return heartbeat


# ------------------------------------------------------------------------------
# Cleanup
# ------------------------------------------------------------------------------
def _delete_in_batches(queryset: models.QuerySet[Any], *, batch_size: int) -> int:
    """Delete the rows of `queryset` a batch of primary keys at a time; return how many."""
    deleted = 0
    model = queryset.model
    while True:
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        count, _ = model._default_manager.filter(pk__in=ids).delete()
        deleted += count


def task_records_cleanup(*, batch_size: int = CLEANUP_BATCH_SIZE) -> dict[str, int]:
    """Delete ledger rows older than ZENITH_TASK_RETENTION_DAYS and expired result rows.

    In batches, so neither a million rows in memory nor one long-locking statement.
    """
    from django_celery_results.models import GroupResult, TaskResult

    now = timezone.now()
    cutoff = now - timedelta(days=settings.ZENITH_TASK_RETENTION_DAYS)
    results_cutoff = now - timedelta(seconds=_result_expires_seconds())
    return {
        "ledger": _delete_in_batches(
            TaskRecord.objects.filter(queued_at__lt=cutoff), batch_size=batch_size
        ),
        "results": _delete_in_batches(
            TaskResult.objects.filter(date_done__lt=results_cutoff), batch_size=batch_size
        ),
        "group_results": _delete_in_batches(
            GroupResult.objects.filter(date_done__lt=results_cutoff), batch_size=batch_size
        ),
    }


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
