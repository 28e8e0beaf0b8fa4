"""factory_boy factories for the task ledger."""

from __future__ import annotations

import uuid
from datetime import timedelta

import factory
from django.utils import timezone

from taskops.models import FINAL_STATES, TaskRecord, TaskState


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
