"""README's development command: the dev override on the production file, nothing exported."""

from __future__ import annotations

import psycopg
import pytest
import redis
import requests

from tests.deploy.compose import SERVICES, Api, Stack, wait_until
from tests.deploy.conftest import superuser_token

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_the_dev_override_runs_in_debug_with_the_source_mounted(dev_stack: Stack):
    for service in SERVICES:
        info = dev_stack.container(service)
        assert info["State"]["Health"]["Status"] == "healthy", service
    migrate = dev_stack.containers("migrate", all=True)
    assert [m["State"]["ExitCode"] for m in migrate] == [0]

    # The repository is mounted over /app everywhere (migrate too): tests/ is not in the image.
    for service in ("migrate", "web", "celery_worker", "celery_beat"):
        info = dev_stack.containers(service, all=True)[0]
        mounts = {m["Destination"]: m for m in info["Mounts"]}
        assert mounts["/app"]["Type"] == "bind", service
    assert "tests" in dev_stack.exec("web", "ls", "/app").split()

    # Debug mode under runserver: Django's technical 404 page; no DJANGO_* was exported.
    page = requests.get(f"{dev_stack.web}/no-such-page/", headers={"Host": "localhost"}, timeout=30)
    assert page.status_code == 404
    assert "Using the URLconf defined in" in page.text
    assert "runserver" in " ".join(dev_stack.container("web")["Config"]["Cmd"])

    # PostgreSQL and Redis on localhost for tools on the host.
    ports = dev_stack.ports
    client = redis.Redis(host="127.0.0.1", port=ports["ZENITH_DEV_REDIS_PORT"], socket_timeout=10)
    assert client.ping()
    with psycopg.connect(
        host="127.0.0.1",
        port=ports["ZENITH_DEV_POSTGRES_PORT"],
        user="zenith",
        password="zenith",
        dbname="zenith",
        connect_timeout=10,
    ) as conn:
        assert conn.execute("SELECT count(*) FROM django_migrations").fetchone()[0] > 0

    # The task system works end to end: three workers, beat, and a task through the API.
    api = Api(dev_stack.web, superuser_token(dev_stack))
    api.session.headers["Host"] = "localhost"
    health = wait_until(
        lambda: (r := api.get("tasks/health")).status_code == 200 and r.json(),
        timeout=180,
        what="tasks/health 200",
        every=3,
    )
    assert {name.split("@")[0] for name in health["checks"]["workers"]["names"]} == {
        "general",
        "ml",
        "sync",
    }
    flower = requests.get(f"{dev_stack.flower}/api/workers", auth=("dev", "dev"), timeout=30)
    assert flower.status_code == 200
