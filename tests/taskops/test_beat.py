"""Schedules: the default set, and one sender however many beats run."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from taskops import services
from taskops.beat import LeaderDatabaseScheduler
from taskops.models import SchedulerLease, TaskRecord
from tests.taskops.factories import IntervalScheduleFactory, PeriodicTaskFactory
from tests.taskops.helpers import wait_for
from zenith.celery import app

SCHEDULE = "every second noop"
SENT = f"Sending due task {SCHEDULE}"


def sends() -> list:
    return list(
        TaskRecord.objects.filter(triggered_by=f"beat:{SCHEDULE}")
        .order_by("queued_at")
        .values_list("queued_at", flat=True)
    )


def gaps(times: list) -> list[float]:
    return [(b - a).total_seconds() for a, b in itertools.pairwise(times)]


@pytest.mark.slow
def test_two_beats_send_each_tick_once_and_the_standby_takes_over(processes):
    """Two beats on a schedule every second for 15 s: each tick sent once, then failover."""
    PeriodicTaskFactory(
        name=SCHEDULE,
        task="taskops.tasks.noop",
        interval__every=1,
        interval__period=IntervalSchedule.SECONDS,
    )
    env = {"ZENITH_BEAT_LEASE_SECONDS": "3"}
    beats = [processes.beat(env=env, name="beat-1"), processes.beat(env=env, name="beat-2")]
    for beat in beats:
        beat.wait_for_log("beat: Starting...", timeout=60)
    wait_for(lambda: len(sends()) >= 1, timeout=30, what="the first send")
    start = time.monotonic()

    time.sleep(15)

    times = sends()
    span = (times[-1] - times[0]).total_seconds()
    # One send per tick: about one a second. Beat may wake a little early or late, so the
    # count only roughly follows the span; two beats sending one tick would show as a pair
    # of sends a few milliseconds apart, which the minimum gap rules out.
    assert 10 <= len(times) <= 17, len(times)
    assert len(times) <= span * 1.15 + 2, "more sends than ticks"
    assert min(gaps(times)) > 0.5, gaps(times)
    senders = [beat for beat in beats if SENT in beat.log()]
    assert len(senders) == 1, "exactly one beat sends"
    leader = senders[0]
    standby = next(beat for beat in beats if beat is not leader)
    assert "standing by" in standby.log() or "another beat holds the lease" in standby.log()
    assert leader.pid == int(SchedulerLease.objects.get(name="beat").holder.split(":")[1])

    # The leader dies without a word; the standby takes over once its lease runs out.
    os.kill(leader.pid, signal.SIGKILL)
    killed_at = timezone.now()
    standby.wait_for_log(SENT, timeout=15)
    time.sleep(4)

    after = [t for t in sends() if t > killed_at]
    assert after, "the standby sends after the takeover"
    times = sends()
    assert min(gaps(times)) > 0.5, gaps(times)
    assert (after[0] - killed_at) < timedelta(seconds=3 + 5), "taken over soon after the lease"

    # An edit in the admin (a save of the row) reaches the running beat: disabled, it stops.
    periodic = PeriodicTask.objects.get(name=SCHEDULE)
    periodic.enabled = False
    periodic.save()
    time.sleep(3)
    sent_by_then = len(sends())
    time.sleep(4)
    assert len(sends()) == sent_by_then, "a disabled schedule is not sent"
    assert time.monotonic() - start < 60


def test_a_schedule_change_on_the_first_leading_tick_sends_the_tick_once(transactional_db):
    """Another beat starting (it writes its default entries) just before the first tick."""
    queue = f"beat-test-{os.getpid()}"
    PeriodicTaskFactory(
        name=SCHEDULE,
        task="taskops.tasks.noop",
        interval__every=1,
        interval__period=IntervalSchedule.SECONDS,
        queue=queue,
        last_run_at=timezone.now() - timedelta(seconds=10),
    )
    scheduler = LeaderDatabaseScheduler(app=app)
    try:
        PeriodicTasks.update_changed()  # what a second beat's start-up does
        for _ in range(5):
            scheduler.tick()
        assert len(sends()) == 1, "the due tick was sent once"
        assert PeriodicTask.objects.get(name=SCHEDULE).total_run_count == 1
    finally:
        scheduler.close()
        with app.connection_for_write() as connection:
            connection.default_channel.queue_delete(queue)


def test_lease_has_one_holder_until_it_runs_out_or_is_released(db):
    assert services.scheduler_lease_acquire(name="beat", holder="a", seconds=30)
    assert not services.scheduler_lease_acquire(name="beat", holder="b", seconds=30)
    assert services.scheduler_lease_acquire(name="beat", holder="a", seconds=30)  # renew

    SchedulerLease.objects.filter(name="beat").update(expires_at=timezone.now())
    assert services.scheduler_lease_acquire(name="beat", holder="b", seconds=30)
    assert not services.scheduler_lease_acquire(name="beat", holder="a", seconds=30)

    services.scheduler_lease_release(name="beat", holder="b")
    assert services.scheduler_lease_acquire(name="beat", holder="a", seconds=30)
    assert SchedulerLease.objects.get(name="beat").holder == "a"


def test_setup_periodic_tasks_creates_the_defaults_once(db, capsys):
    call_command("setup_periodic_tasks")
    call_command("setup_periodic_tasks")

    rows = {p.task: p for p in PeriodicTask.objects.select_related("interval", "crontab")}
    assert set(rows) == {
        "integrations.tasks.sync_slack_tickets",
        "integrations.tasks.process_email_tickets",
        "taskops.tasks.cleanup_old_task_results",
        "taskops.tasks.cleanup_failed_tasks",
        "mlmodels.tasks.train_all_organizations_task",
        "taskops.tasks.health_check_tasks",
        "taskops.tasks.evaluate_alert_rules",
        "taskops.tasks.republish_lost_tasks",
    }
    assert PeriodicTask.objects.count() == 8

    def every(task: str) -> timedelta:
        return rows[task].interval.schedule.run_every

    assert every("integrations.tasks.sync_slack_tickets") == timedelta(minutes=5)
    assert every("integrations.tasks.process_email_tickets") == timedelta(minutes=10)
    assert every("taskops.tasks.cleanup_old_task_results") == timedelta(hours=1)
    assert every("taskops.tasks.cleanup_failed_tasks") == timedelta(hours=1)
    assert every("taskops.tasks.health_check_tasks") == timedelta(minutes=1)
    assert every("taskops.tasks.evaluate_alert_rules") == timedelta(minutes=1)
    assert every("taskops.tasks.republish_lost_tasks") == timedelta(minutes=1)
    daily = rows["mlmodels.tasks.train_all_organizations_task"].crontab
    assert (daily.minute, daily.hour, daily.day_of_week) == ("0", "3", "*")
    for row in rows.values():
        assert json.loads(row.headers) == {"zenith_triggered_by": f"beat:{row.name}"}
        assert row.enabled
    assert "8 created" in capsys.readouterr().out


def test_setup_periodic_tasks_keeps_admin_edits_unless_reset(db):
    call_command("setup_periodic_tasks")
    slack = PeriodicTask.objects.get(task="integrations.tasks.sync_slack_tickets")
    slack.interval = IntervalScheduleFactory(every=30, period=IntervalSchedule.MINUTES)
    slack.enabled = False
    slack.save()

    call_command("setup_periodic_tasks")
    slack.refresh_from_db()
    assert (slack.interval.every, slack.enabled) == (30, False)

    call_command("setup_periodic_tasks", "--reset")
    slack.refresh_from_db()
    assert (slack.interval.every, slack.interval.period, slack.enabled) == (5, "minutes", True)
    assert PeriodicTask.objects.count() == 8
