"""factory_boy factories for the task ledger, schedules and their history.

Also the third-party rows taskops works with: django-celery-beat's schedules and
django-celery-results' results.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import factory
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_results.models import TaskResult

from taskops.models import FINAL_STATES, ScheduleChange, ScheduleChangeAction, TaskRecord, TaskState


class TaskRecordFactory(factory.django.DjangoModelFactory):
    """A ledger row as the publish signal writes it; finished a second later if final."""

    class Meta:
        model = TaskRecord

    task_id = factory.LazyFunction(lambda: str(uuid.uuid4()))
    name = "taskops.tasks.noop"
    queue = "default"
    state = TaskState.PENDING
    queued_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyAttribute(lambda record: record.queued_at)
    finished_at = factory.LazyAttribute(
        lambda record: (
            record.queued_at + timedelta(seconds=1) if record.state in FINAL_STATES else None
        )
    )


class IntervalScheduleFactory(factory.django.DjangoModelFactory):
    """A new interval (not shared with other schedules): every 10 minutes."""

    class Meta:
        model = IntervalSchedule

    every = 10
    period = IntervalSchedule.MINUTES


class PeriodicTaskFactory(factory.django.DjangoModelFactory):
    """An enabled schedule of the no-op task on its own interval."""

    class Meta:
        model = PeriodicTask

    name = factory.Sequence(lambda n: f"schedule {n}")
    task = "taskops.tasks.noop"
    interval = factory.SubFactory(IntervalScheduleFactory)


class ScheduleChangeFactory(factory.django.DjangoModelFactory):
    """A history row: an admin disabled the schedule through the API."""

    class Meta:
        model = ScheduleChange

    periodic_task = factory.SubFactory(PeriodicTaskFactory)
    periodic_task_name = factory.SelfAttribute("periodic_task.name")
    action = ScheduleChangeAction.CHANGED
    actor = "user:1"
    actor_username = "admin"
    source = "api"
    before = factory.LazyFunction(lambda: {"enabled": True})
    after = factory.LazyFunction(lambda: {"enabled": False})


class TaskResultFactory(factory.django.DjangoModelFactory):
    """A django-celery-results row of a finished task."""

    class Meta:
        model = TaskResult

    task_id = factory.LazyFunction(lambda: str(uuid.uuid4()))
    status = "SUCCESS"
