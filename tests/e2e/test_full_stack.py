"""The whole stack as Docker runs it (gunicorn, workers, beat, Flower), driven over HTTP."""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from tests.support.email_samples import plain
from tests.support.services import missing, redis_available
from tests.tickets.factories import OrganizationFactory
from tickets.demo import DEMO_DATASET
from tickets.models import Role
from tickets.services import membership_set

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FLOWER_AUTH = ("ops", "flower-secret")
METRICS_TOKEN = "metrics-e2e-token"
SLACK_TOKEN = "xoxb-e2e"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def labelled_rows(per_class: int) -> list[dict[str, str]]:
    """A fixed sample of the shared dataset: `per_class` rows of the three largest categories."""
    taken: dict[str, list[dict[str, str]]] = {"4": [], "5": [], "6": []}
    with DEMO_DATASET.open(newline="") as handle:
        for row in csv.DictReader(handle):
            bucket = taken.get(row["category"])
            if bucket is not None and len(bucket) < per_class:
                bucket.append(row)
    return [row for rows in taken.values() for row in rows]


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(f"{self.base}/api/v1/{path}", timeout=30, **kwargs)

    def post(self, path: str, json: dict[str, Any] | None = None) -> requests.Response:
        return self.session.post(f"{self.base}/api/v1/{path}", json=json or {}, timeout=30)

    def patch(self, path: str, json: dict[str, Any]) -> requests.Response:
        return self.session.patch(f"{self.base}/api/v1/{path}", json=json, timeout=30)

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.get(f"tasks/status/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_task(self, task_id: str, states: set[str], timeout: float = 180) -> dict[str, Any]:
        return wait_until(
            lambda: (task := self.task(task_id))["state"] in states and task,
            timeout=timeout,
            what=f"task {task_id} in {states}",
        )


@pytest.fixture
def stack(processes, dovecot_server, slack_api, tmp_path):
    """gunicorn, general/ml/sync workers, beat and Flower against PostgreSQL and Redis."""
    if connection.vendor != "postgresql":
        missing("PostgreSQL (set DATABASE_URL)")
    if not redis_available() or not processes_env_broker().startswith("redis://"):
        missing("Redis as the broker (set CELERY_BROKER_URL=redis://…)")
    env = {
        "SLACK_API_URL": slack_api.url,
        "ZENITH_RETRY_DELAYS": "1,1,1",
        "ZENITH_METRICS_TOKEN": METRICS_TOKEN,
        "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
        "DJANGO_MEDIA_ROOT": str(tmp_path / "media"),
    }
    web_port, flower_port = free_port(), free_port()
    web = processes.spawn(
        name="gunicorn",
        command=[
            sys.executable,
            "-m",
            "gunicorn",
            "zenith.wsgi",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--workers",
            "2",
            "--timeout",
            "120",
        ],
        env=env,
    )
    workers = {
        kind: processes.worker(worker_type=kind, concurrency=1, env=env)
        for kind in ("general", "ml", "sync")
    }
    beat = processes.beat(env=env)
    processes.spawn(
        name="flower",
        command=[
            sys.executable,
            "scripts/start_celery_worker.py",
            "flower",
            "--port",
            str(flower_port),
        ],
        env=env,
    )
    web.wait_for_log("Booting worker", timeout=60)
    base = f"http://127.0.0.1:{web_port}"
    wait_until(lambda: _up(f"{base}/admin/login/"), timeout=60, what="gunicorn")
    return {
        "base": base,
        "flower": f"http://127.0.0.1:{flower_port}",
        "workers": workers,
        "beat": beat,
        "dovecot": dovecot_server,
        "slack": slack_api,
    }


def processes_env_broker() -> str:
    from django.conf import settings

    return settings.CELERY_BROKER_URL


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_full_stack_over_http(stack, make_user):
    admin = make_user(username="ops-admin", is_staff=True, is_superuser=False)
    organization = OrganizationFactory(slug="e2e", name="E2E Corp")
    membership_set(user=admin, organization=organization, role=Role.ADMIN)
    api = Api(stack["base"], Token.objects.create(user=admin).key)
    org_id = organization.pk

    # Labelled tickets arrive over the API: a person's labels are training labels.
    for row in labelled_rows(per_class=60):
        response = api.post(
            "tickets/",
            {
                "organization": org_id,
                "subject": row["title"],
                "body": row["body"],
                "category": row["category"],
            },
        )
        assert response.status_code == 201, response.text
    assert api.get(f"tickets/?organization={org_id}").json()["count"] == 180

    # Train on a real ML worker; the version becomes active.
    train = api.post("tasks/ml/train-model", {"organization_id": org_id})
    assert train.status_code == 202, train.text
    trained = api.wait_task(train.json()["task_id"], {"SUCCESS", "FAILURE"}, timeout=300)
    assert trained["state"] == "SUCCESS", trained
    models = api.get(f"models/?organization={org_id}").json()["results"]
    active = [m for m in models if m["status"] == "active" and m["target"] == "category"]
    assert len(active) == 1, models

    # A new ticket is classified automatically once committed.
    created = api.post(
        "tickets/",
        {"organization": org_id, "subject": "laptop screen broken", "body": "new laptop needed"},
    )
    assert created.status_code == 201
    ticket_id = created.json()["id"]
    classified = wait_until(
        lambda: (t := api.get(f"tickets/{ticket_id}").json())["predictions"]["category"] and t,
        timeout=120,
        what="automatic classification",
    )
    assert classified["predictions"]["category"]["model_version_id"] == active[0]["id"]
    assert classified["category_source"] == "model"

    # E-mail ingestion from a real Dovecot, then classification of the new ticket.
    username, password = stack["dovecot"].add_user("support")
    stack["dovecot"].append(
        username, "INBOX", plain("VPN is down", "cannot connect to vpn from home")
    )
    mailbox = api.post(
        "integrations/mailboxes/",
        {
            "organization": org_id,
            "name": "support",
            "host": stack["dovecot"].host,
            "port": stack["dovecot"].port,
            "security": "none",
            "username": username,
            "password": password,
        },
    )
    assert mailbox.status_code == 201, mailbox.text
    assert "password" not in mailbox.json()
    sync = api.post("tasks/sync/email", {"organization_id": org_id})
    assert sync.status_code == 202, sync.text
    assert api.wait_task(sync.json()["task_id"], {"SUCCESS", "FAILURE"})["state"] == "SUCCESS"
    email_ticket = wait_until(
        lambda: (
            (rows := api.get(f"tickets/?organization={org_id}&source=email").json()["results"])
            and rows[0]["predictions"]["category"]
            and rows[0]
        ),
        timeout=120,
        what="e-mail ticket classified",
    )
    assert email_ticket["subject"] == "VPN is down"

    # Slack history sync against the local Slack Web API server.
    slack = stack["slack"]
    slack.add_workspace(token=SLACK_TOKEN, team_id="TE2E")
    slack.add_channel("CE2E")
    for n in range(5):
        slack.add_message("CE2E", f"printer {n} is jammed again")
    workspace = api.post(
        "integrations/slack/workspaces/",
        {"organization": org_id, "team_id": "TE2E", "name": "E2E", "bot_token": SLACK_TOKEN},
    )
    assert workspace.status_code == 201, workspace.text
    assert "bot_token" not in workspace.json()
    channel = api.post(
        "integrations/slack/channels/",
        {"workspace": workspace.json()["id"], "channel_id": "CE2E", "name": "help"},
    )
    assert channel.status_code == 201, channel.text
    slack_sync = api.post("tasks/sync/slack", {"organization_id": org_id})
    assert slack_sync.status_code == 202
    assert api.wait_task(slack_sync.json()["task_id"], {"SUCCESS", "FAILURE"})["state"] == "SUCCESS"
    wait_until(
        lambda: api.get(f"tickets/?organization={org_id}&source=slack").json()["count"] == 5,
        timeout=60,
        what="five Slack tickets",
    )

    # A task that fails (mailbox unreachable), is fixed, and is retried through the API.
    # Where a mailbox connects changes only with its password in the same request.
    moved = api.patch(
        f"integrations/mailboxes/{mailbox.json()['id']}/",
        {"port": free_port(), "password": password},
    )
    assert moved.status_code == 200, moved.text
    failing = api.post("tasks/sync/email", {"organization_id": org_id}).json()["task_id"]
    failed = api.wait_task(failing, {"FAILURE", "SUCCESS"}, timeout=120)
    assert failed["state"] == "FAILURE", failed
    assert failed["retries"] == 3
    back = api.patch(
        f"integrations/mailboxes/{mailbox.json()['id']}/",
        {"port": stack["dovecot"].port, "password": password},
    )
    assert back.status_code == 200, back.text
    retried = api.post(f"tasks/retry/{failing}")
    assert retried.status_code == 202, retried.text
    again = api.wait_task(retried.json()["task_id"], {"SUCCESS", "FAILURE"})
    assert again["state"] == "SUCCESS"
    assert again["retry_of"] == failing

    # Cancel a queued training: the single ML worker is busy with the first one.
    first = api.post("tasks/ml/train-model", {"organization_id": org_id}).json()["task_id"]
    second = api.post("tasks/ml/train-model", {"organization_id": org_id}).json()["task_id"]
    cancelled = api.post(f"tasks/cancel/{second}")
    assert cancelled.status_code in (200, 202), cancelled.text
    assert api.wait_task(second, {"REVOKED"}, timeout=60)["state"] == "REVOKED"
    assert api.wait_task(first, {"SUCCESS", "FAILURE"}, timeout=300)["state"] == "SUCCESS"

    # Health and metrics.
    health = wait_until(
        lambda: (r := api.get("tasks/health")).status_code == 200 and r, timeout=90, what="healthy"
    )
    assert health.json()
    metrics = requests.get(
        f"{stack['base']}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
    )
    assert metrics.status_code == 200
    names = {family.name for family in text_string_to_metric_families(metrics.text)}
    assert any("task" in name for name in names), names
    assert requests.get(f"{stack['base']}/metrics", timeout=30).status_code in (401, 403)

    # Flower, as a client, sees the three workers and refuses requests without credentials.
    flower = stack["flower"]
    wait_until(lambda: _up_auth(f"{flower}/api/workers?refresh=1"), timeout=60, what="flower")
    workers = requests.get(f"{flower}/api/workers?refresh=1", auth=FLOWER_AUTH, timeout=30).json()
    expected = {worker.hostname for worker in stack["workers"].values()}
    assert expected <= set(workers), workers.keys()
    assert requests.get(f"{flower}/api/workers", timeout=30).status_code == 401


def _up_auth(url: str) -> bool:
    try:
        return requests.get(url, auth=FLOWER_AUTH, timeout=10).status_code == 200
    except requests.RequestException:
        return False
