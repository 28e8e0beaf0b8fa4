"""tasks/health against real workers and a real broker that goes away."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from taskops import services
from taskops.models import TaskState
from tests.support.services import missing
from tests.taskops.helpers import wait_for_state
from zenith.celery import app

# Each test starts real worker processes.
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_redis(processes, monkeypatch) -> Iterator[tuple[str, object]]:
    """A Redis server of this test's own, and this process's Celery app pointed at it."""
    import shutil

    if shutil.which("redis-server") is None:
        missing("redis-server")
    port = free_port()
    server = processes.spawn(
        name="redis",
        command=[
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
    )
    server.wait_for_log("Ready to accept connections", timeout=20)
    url = f"redis://127.0.0.1:{port}/0"
    # Celery reads CELERY_BROKER_URL from the environment before its own setting.
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    monkeypatch.setitem(app.conf, "broker_url", url)
    monkeypatch.setitem(app.conf, "broker_transport_options", {"socket_connect_timeout": 2})
    # Drop the connection and producer pools bound to the run's broker (what Celery does
    # after a fork), so broadcasts go to this Redis too; and again once the URL is back.
    app._after_fork()
    yield url, server
    monkeypatch.undo()
    app._after_fork()


def test_health_is_200_with_a_worker_and_503_naming_workers_without(processes, api_client):
    worker = processes.worker(worker_type="all", concurrency=1)
    # What beat does every minute: the heartbeat health reads.
    heartbeat = services.task_enqueue(name="taskops.tasks.health_check_tasks", kwargs={})
    wait_for_state(heartbeat, TaskState.SUCCESS)

    response = api_client.get("/api/v1/tasks/health")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["failing"] == []
    checks = body["checks"]
    assert checks["database"]["ok"] is True
    assert checks["broker"]["ok"] is True
    assert checks["workers"]["names"] == [worker.hostname]
    assert checks["workers"]["per_queue"] == {"default": 1, "ml_tasks": 1, "sync_tasks": 1}
    assert checks["beat"]["ok"] is True
    assert checks["beat"]["age_seconds"] < 60
    assert set(checks["queues"]["depths"]) == {"default", "ml_tasks", "sync_tasks"}

    worker.stop()
    response = api_client.get("/api/v1/tasks/health/")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["workers"]
    assert "no worker answered" in body["checks"]["workers"]["error"]


def test_health_counts_queued_messages_and_flags_an_unserved_queue(processes, api_client):
    processes.worker(worker_type="general", concurrency=1)
    services.heartbeat_record(name="beat")
    for _ in range(3):
        services.task_enqueue(name="mlmodels.tasks.train_all_organizations_task", kwargs={})

    body = api_client.get("/api/v1/tasks/health").json()

    assert body["checks"]["queues"]["depths"]["ml_tasks"] == 3
    assert body["failing"] == ["workers"]
    assert "ml_tasks" in body["checks"]["workers"]["error"]
    assert body["checks"]["workers"]["per_queue"]["default"] == 1


@pytest.mark.redis
def test_health_is_503_naming_the_broker_when_it_is_unreachable(
    processes, private_redis, api_client
):
    url, server = private_redis
    processes.worker(worker_type="all", concurrency=1, env={"CELERY_BROKER_URL": url})
    services.heartbeat_record(name="beat")
    before = api_client.get("/api/v1/tasks/health")
    assert before.status_code == 200, before.json()

    server.kill()
    response = api_client.get("/api/v1/tasks/health")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["error"]
    assert body["checks"]["workers"]["ok"] is None
    assert body["checks"]["database"]["ok"] is True
