"""Restart a private Redis under a worker and the API: no hang, no 500, nothing accepted lost.

The machine's Redis on 6379 is shared, so the test runs its own redis-server on a free
port (no persistence) and points the worker and this process's Celery app at it.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator

import pytest

from taskops.models import TaskRecord, TaskState
from tests.faults.conftest import wait_until
from tests.support.services import missing, port_open
from zenith.celery import app

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SYNC_EMAIL = "/api/v1/tasks/sync/email"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    def __init__(self, processes, port: int) -> None:
        self.processes, self.port, self.server = processes, port, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [shutil.which("redis-server") or "redis-server", "--port", str(self.port)]
        command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.server = self.processes.spawn(name=f"redis-{self.port}", command=command)
        wait_until(lambda: port_open("127.0.0.1", self.port), timeout=10, interval=0.05)

    def stop(self) -> None:
        self.server.stop()
        wait_until(lambda: not port_open("127.0.0.1", self.port), timeout=10, interval=0.05)


@pytest.fixture
def private_redis(real_services, processes, settings) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        missing("redis-server (to run a private Redis)")
    redis = PrivateRedis(processes, free_port())
    redis.start()
    keys = ("broker_url", "broker_read_url", "broker_write_url")
    old = {key: app.conf[key] for key in keys}
    # This process's pooled broker connections name the shared Redis: set them aside.
    old_pools = app._pool, app.amqp._producer_pool
    settings.CELERY_BROKER_URL = redis.url  # what worker processes are given
    settings.REDIS_URL = redis.url
    app._pool, app.amqp._producer_pool = None, None
    app.conf.update(dict.fromkeys(keys, redis.url))
    try:
        yield redis
    finally:
        app.conf.update(old)
        app._pool, app.amqp._producer_pool = old_pools


def test_workers_and_the_api_ride_out_a_redis_restart(
    private_redis, processes, organization, api_client
):
    processes.worker(worker_type="all", concurrency=1)

    def enqueue():
        return api_client.post(SYNC_EMAIL, {"organization_id": organization.pk}, format="json")

    accepted = []
    for _ in range(5):
        response = enqueue()
        assert response.status_code == 202
        accepted.append(response.data["task_id"])
    records = TaskRecord.objects.filter(task_id__in=accepted)
    wait_until(lambda: records.filter(state=TaskState.SUCCESS).count() == 5, timeout=60)

    private_redis.stop()
    started = time.monotonic()
    down = enqueue()
    assert time.monotonic() - started < 20  # answered, not hung
    assert down.status_code == 503
    assert "the task queue is unavailable" in down.data["detail"]

    private_redis.start()
    restarted = time.monotonic()
    # The worker reconnects by itself; every call the API accepts from now on runs.
    for _ in range(5):
        response = enqueue()
        assert response.status_code == 202
        accepted.append(response.data["task_id"])
    records = TaskRecord.objects.filter(task_id__in=accepted)
    wait_until(lambda: records.filter(state=TaskState.SUCCESS).count() == 10, timeout=30)
    assert time.monotonic() - restarted < 30

    assert records.count() == 10
    assert records.filter(state=TaskState.SUCCESS).count() == 10
    # The refused call's row says it failed to queue, rather than looking queued forever.
    refused = TaskRecord.objects.exclude(task_id__in=accepted).get()
    assert refused.state == TaskState.FAILURE
    assert refused.error.startswith("OperationalError")
    assert TaskRecord.objects.count() == 11
