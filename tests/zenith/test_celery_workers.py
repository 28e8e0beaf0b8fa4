"""Tasks published on a real broker run on a real worker process and leave a result row."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django_celery_results.models import TaskResult
from kombu import Connection

from taskops.models import Heartbeat
from tests.support.services import missing, redis_available, redis_url
from zenith.celery import app

TASK = "taskops.tasks.health_check_tasks"


def wait_for_result(task_id: str, timeout: float = 60) -> TaskResult:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = TaskResult.objects.filter(task_id=task_id, status="SUCCESS").first()
        if row is not None:
            return row
        time.sleep(0.2)
    raise AssertionError(f"no SUCCESS result row for {task_id} within {timeout}s")


def publish(url: str, transport_options: dict[str, object]) -> str:
    with Connection(url, transport_options=transport_options) as connection:
        return app.send_task(TASK, kwargs={}, connection=connection).id


@pytest.mark.redis
def test_task_through_redis_runs_on_a_worker_process(processes):
    url = redis_url()
    if not redis_available(url):
        missing(f"Redis at {url}")
    worker = processes.worker(worker_type="general", env={"CELERY_BROKER_URL": url})

    task_id = publish(url, {})

    row = wait_for_result(task_id)
    assert row.task_name == TASK
    assert row.worker == worker.hostname
    assert Heartbeat.objects.filter(name="beat").exists()


def test_task_through_the_embedded_filesystem_broker(processes, tmp_path: Path):
    broker_dir = tmp_path / "broker"
    for folder in ("queue", "control"):
        (broker_dir / folder).mkdir(parents=True)
    worker = processes.worker(
        worker_type="general",
        env={"CELERY_BROKER_URL": "filesystem://", "ZENITH_BROKER_DIR": str(broker_dir)},
    )

    task_id = publish(
        "filesystem://",
        {
            "data_folder_in": str(broker_dir / "queue"),
            "data_folder_out": str(broker_dir / "queue"),
            "control_folder": str(broker_dir / "control"),
        },
    )

    row = wait_for_result(task_id)
    assert row.worker == worker.hostname
    assert not list((broker_dir / "queue").iterdir()), "the message was consumed"


def test_inthread_worker_runs_a_delayed_task(inthread_worker):
    from taskops.tasks import health_check_tasks

    result = health_check_tasks.delay()

    assert wait_for_result(result.id).status == "SUCCESS"
