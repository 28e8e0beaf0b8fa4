"""GET /healthz and /readyz: no login, any Host, and nothing about the machine in the body."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator

import pytest
from django.db import connection
from django.test import Client

from tests.support.services import missing
from zenith.celery import app

# What a body must never carry: the broker's and database's addresses, queue names,
# error texts of the drivers.
SECRETS_OF_THE_HOST = ("127.0.0.1", "localhost", "6379", "5432", "ml_tasks", "sync_tasks")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_reveals_nothing(body: bytes) -> None:
    text = body.decode().lower()
    for secret in (*SECRETS_OF_THE_HOST, "error", "refused", "traceback", "pid"):
        assert secret not in text, f"{secret!r} in {text}"


@pytest.fixture
def private_redis(processes, monkeypatch) -> Iterator[object]:
    """A Redis of this test's own as the app's broker, so the test can kill it."""
    if shutil.which("redis-server") is None:
        missing("redis-server")
    port = free_port()
    server = processes.spawn(
        name="redis",
        command=["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
    )
    server.wait_for_log("Ready to accept connections", timeout=20)
    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    monkeypatch.setitem(app.conf, "broker_url", url)
    monkeypatch.setitem(app.conf, "broker_transport_options", {"socket_connect_timeout": 2})
    app._after_fork()  # drop pools bound to the run's broker
    yield server
    monkeypatch.undo()
    app._after_fork()


def test_healthz_answers_ok_without_login_and_without_the_database():
    # No `db` fixture: the liveness probe must not touch the database at all.
    response = Client().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert Client().get("/healthz/").json() == {"status": "ok"}


@pytest.mark.django_db
def test_probes_answer_a_host_that_django_allowed_hosts_does_not_list(settings):
    settings.ALLOWED_HOSTS = ["zenith.example.com"]
    client = Client(HTTP_HOST="172.18.0.5:8000")

    # Every other page refuses the unknown Host, which is why healthchecks could not use them.
    assert client.get("/admin/login/").status_code == 400
    liveness = client.get("/healthz")
    readiness = client.get("/readyz")

    assert liveness.status_code == 200
    assert readiness.status_code == 200, readiness.content
    assert readiness.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok"}}
    assert_reveals_nothing(readiness.content)


@pytest.mark.django_db
def test_probes_accept_only_reads():
    response = Client().post("/readyz")

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert Client().head("/readyz").status_code == 200


@pytest.mark.redis
def test_readyz_is_503_when_the_broker_is_down_and_reveals_nothing(private_redis, settings):
    settings.ALLOWED_HOSTS = ["zenith.example.com"]
    client = Client(HTTP_HOST="web")
    assert client.get("/readyz").status_code == 200

    private_redis.kill()
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "unavailable"},
    }
    assert_reveals_nothing(response.content)
    # Liveness does not depend on the broker: the process itself is fine.
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_when_the_database_is_unreachable(monkeypatch):
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "HOST", "127.0.0.1")
    monkeypatch.setitem(connection.settings_dict, "PORT", str(free_port()))
    try:
        response = Client().get("/readyz")
    finally:
        connection.close()

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "unavailable", "broker": "ok"}
    assert_reveals_nothing(response.content)
