"""Hostile and runaway messages: pickle pushed straight onto the queue, a task past its limit."""

from __future__ import annotations

import base64
import json
import operator
import pickle
import time
import uuid
from pathlib import Path

import pytest
import redis
from django_celery_results.models import TaskResult

from taskops.models import TaskRecord, TaskState
from tests.faults.conftest import wait_until
from tests.support.services import redis_url
from zenith.celery import app

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class TouchOnUnpickle:
    """Creates `path` when unpickled: proof that a worker ran code from a message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return operator.methodcaller("touch"), (self.path,)


def raw_pickle_message(*, task_id: str, marker: Path) -> bytes:
    """A kombu message for Redis as a hostile client would push it: pickled task arguments."""
    body = pickle.dumps(((TouchOnUnpickle(marker),), {}, {}))
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "binary",
            "content-type": "application/x-python-serialize",
            "headers": {
                "lang": "py",
                "task": "taskops.tasks.noop",
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "argsrepr": "()",
                "kwargsrepr": "{}",
            },
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": "default"},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    ).encode()


def test_a_pickled_message_pushed_onto_the_queue_is_refused_and_runs_no_code(
    broker, processes, tmp_path
):
    marker = tmp_path / "unpickled"
    # The payload works: unpickling it in this process creates the marker.
    pickle.loads(pickle.dumps(TouchOnUnpickle(marker)))  # noqa: S301 - our own bytes
    assert marker.exists()
    marker.unlink()

    worker = processes.worker(worker_type="general", concurrency=1)
    task_id = str(uuid.uuid4())
    client = redis.Redis.from_url(redis_url())
    client.lpush("default", raw_pickle_message(task_id=task_id, marker=marker))

    refused = (
        "Received invalid task message: Refusing to deserialize untrusted content of type pickle"
    )
    worker.wait_for_log(refused, timeout=30)
    # The worker still serves, and the refused message is gone rather than stuck or retried.
    noop = app.send_task("taskops.tasks.noop").id
    wait_until(lambda: TaskRecord.objects.filter(task_id=noop, state=TaskState.SUCCESS).exists())
    time.sleep(1)
    assert not marker.exists()
    assert client.llen("default") == 0
    assert worker.log().count(refused) == 1
    assert not TaskRecord.objects.filter(task_id=task_id).exists()
    assert not TaskResult.objects.filter(task_id=task_id).exists()
    assert TaskRecord.objects.count() == 1


def test_a_task_past_its_soft_time_limit_fails_once_and_is_not_redelivered(broker, processes):
    worker = processes.worker(
        worker_type="general",
        concurrency=1,
        env={"CELERY_TASK_SOFT_TIME_LIMIT": "2", "CELERY_TASK_TIME_LIMIT": "4"},
    )
    # A publisher that has the task registered stamps its own configured limits on the
    # message, which would override the worker's; explicit None leaves them to the worker.
    task_id = app.send_task(
        "taskops.tasks.diagnostic_sleep",
        kwargs={"seconds": 30},
        time_limit=None,
        soft_time_limit=None,
    ).id

    record = wait_until(
        lambda: TaskRecord.objects.filter(task_id=task_id, state=TaskState.FAILURE).first(),
        timeout=30,
    )
    assert record.error.startswith("SoftTimeLimitExceeded")
    assert 2 <= record.runtime < 4
    assert TaskResult.objects.get(task_id=task_id).status == "FAILURE"
    # Well past the hard limit: still one delivery, one failed attempt, nothing queued.
    time.sleep(4)
    record.refresh_from_db()
    assert record.state == TaskState.FAILURE
    assert len(record.attempts) == 1
    assert worker.log().count(f"taskops.tasks.diagnostic_sleep[{task_id}] received") == 1
    assert redis.Redis.from_url(redis_url()).llen("default") == 0
    assert TaskRecord.objects.count() == 1
