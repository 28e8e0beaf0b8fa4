"""docker/docker-compose.yml as README deploys it: the project's image, every service, over HTTP.

One stack for the whole module (bringing it up is the slow part): the service checks, the
task flow through the containers, one general worker container killed under 1,000 queued
tasks, then three general workers with --scale.
"""

from __future__ import annotations

import csv
import imaplib
import io
import json
import subprocess
import time
from typing import Any

import pytest
import requests
from imapclient import IMAPClient
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.compose import FLOWER_AUTH, PUBLIC_HOST, SERVICES, Api, Stack, wait_until
from tests.deploy.conftest import DOVECOT_USER, start_dovecot, superuser_token, timed
from tests.support.email_samples import plain
from tickets.demo import DEMO_DATASET

pytestmark = [pytest.mark.compose, pytest.mark.slow, pytest.mark.timeout(1800)]

ZENITH_SERVICES = ("web", "celery_worker", "celery_worker_ml", "celery_worker_sync", "celery_beat")
KILL_TASKS = 1000
HEARTBEAT = "taskops.tasks.health_check_tasks"


@pytest.fixture(scope="module")
def api(prod_stack: Stack) -> Api:
    return Api(prod_stack.web, superuser_token(prod_stack))


def service_health(stack: Stack, service: str) -> str:
    return stack.container(service)["State"].get("Health", {}).get("Status", "none")


def labelled_csv(per_class: int) -> str:
    """Rows of the shipped dataset's three largest categories, as import_tickets reads them."""
    taken: dict[str, list[dict[str, str]]] = {"4": [], "5": [], "6": []}
    with DEMO_DATASET.open(newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        for row in reader:
            bucket = taken.get(row["category"])
            if bucket is not None and len(bucket) < per_class and row["body"]:
                bucket.append(row)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    for rows in taken.values():
        writer.writerows(rows)
    return out.getvalue()


def test_every_service_is_healthy_and_built_as_configured(prod_stack: Stack):
    for service in SERVICES:
        assert service_health(prod_stack, service) == "healthy", service
    migrate = prod_stack.containers("migrate", all=True)
    assert [m["State"]["ExitCode"] for m in migrate] == [0]

    # Each worker's healthcheck pinged its own node, not just any worker.
    for service, kind in (
        ("celery_worker", "general"),
        ("celery_worker_ml", "ml"),
        ("celery_worker_sync", "sync"),
    ):
        info = prod_stack.container(service)
        outputs = [entry["Output"] for entry in info["State"]["Health"]["Log"]]
        assert any(f"{kind}@{info['Config']['Hostname']}: pong" in out for out in outputs), outputs
    beat = prod_stack.container("celery_beat")["State"]["Health"]["Log"]
    assert any("lease held by this beat" in entry["Output"] for entry in beat), beat

    # Probes answer whatever the Host; everything else only for DJANGO_ALLOWED_HOSTS.
    assert requests.get(f"{prod_stack.web}/healthz", timeout=30).json() == {"status": "ok"}
    ready = requests.get(f"{prod_stack.web}/readyz", timeout=30)
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    login = f"{prod_stack.web}/admin/login/"
    assert requests.get(login, headers={"Host": PUBLIC_HOST}, timeout=30).status_code == 200
    assert requests.get(login, headers={"Host": "evil.example"}, timeout=30).status_code == 400

    # tini is PID 1 of the Zenith containers and reaps Celery's children; limits of the seed.
    for service in ZENITH_SERVICES:
        info = prod_stack.container(service)
        assert info["HostConfig"]["Init"] is True, service
        assert prod_stack.exec(service, "cat", "/proc/1/comm").strip() in {"docker-init", "tini"}
    ml = prod_stack.container("celery_worker_ml")["HostConfig"]
    assert ml["Memory"] == 4 * 1024**3
    assert ml["NanoCpus"] == 2 * 10**9
    assert ml["MemoryReservation"] == 2 * 1024**3

    # The image carries the application, not tests, benchmarks or local state.
    listing = prod_stack.exec("web", "ls", "-A", "/app").split()
    assert "manage.py" in listing
    assert not {"tests", "bench", ".git", ".env", ".venv"} & set(listing), listing
    # var/ holds only what the build made (static files, the unused embedded broker's folder).
    assert set(prod_stack.exec("web", "ls", "/app/var").split()) <= {"broker", "media", "static"}

    # Published on 127.0.0.1 only.
    for service in ("web", "flower"):
        bindings = prod_stack.container(service)["HostConfig"]["PortBindings"]
        assert {b["HostIp"] for ports in bindings.values() for b in ports} == {"127.0.0.1"}

    # Flower answers with the operator's credentials only, and sees the three workers.
    workers = wait_until(
        lambda: (
            (
                r := requests.get(
                    f"{prod_stack.flower}/api/workers?refresh=1", auth=FLOWER_AUTH, timeout=30
                )
            ).status_code
            == 200
            and len(r.json()) >= 3
            and r.json()
        ),
        timeout=120,
        what="Flower seeing three workers",
        every=3,
    )
    assert {name.split("@")[0] for name in workers} == {"general", "ml", "sync"}
    assert requests.get(f"{prod_stack.flower}/api/workers", timeout=30).status_code == 401


def test_tasks_ml_email_metrics_and_beat_through_the_containers(prod_stack: Stack, api: Api):
    started = time.monotonic()
    health = wait_until(
        lambda: (r := api.get("tasks/health")).status_code == 200 and r.json(),
        timeout=180,
        what="tasks/health 200",
        every=3,
    )
    first_heartbeat = health["checks"]["beat"].get("last_heartbeat")

    # A labelled import on the ML worker container, as README's import_tickets.
    out = prod_stack.compose(
        "exec",
        "-T",
        "celery_worker_ml",
        "sh",
        "-c",
        "cat > /tmp/labelled.csv && python manage.py import_tickets --org deploy /tmp/labelled.csv"
        " --text title,body --label category=category --label priority=urgency",
        input=labelled_csv(per_class=60),
        timeout=600,
    ).stdout
    assert "180 imported" in out, out
    orgs = api.get("organizations/").json()
    orgs = orgs["results"] if isinstance(orgs, dict) else orgs
    org = next(o for o in orgs if o["slug"] == "deploy")
    org_id = org["id"]
    assert api.get(f"tickets/?organization={org_id}").json()["count"] == 180

    # Training runs on the ML worker container and promotes a model.
    ml_host = prod_stack.container("celery_worker_ml")["Config"]["Hostname"]
    train = api.post("tasks/ml/train-model", {"organization_id": org_id})
    assert train.status_code == 202, train.text
    trained = api.wait_task(train.json()["task_id"], {"SUCCESS", "FAILURE"}, timeout=600)
    assert trained["state"] == "SUCCESS", trained
    assert trained["worker"] == f"ml@{ml_host}"
    models = api.get(f"models/?organization={org_id}").json()["results"]
    active = {m["target"]: m for m in models if m["status"] == "active"}
    assert "category" in active, models

    # A new ticket is classified by that model, on that container.
    created = api.post(
        "tickets/",
        {"organization": org_id, "subject": "laptop screen broken", "body": "need a new laptop"},
    )
    assert created.status_code == 201, created.text
    ticket_id = created.json()["id"]
    ticket = wait_until(
        lambda: (t := api.get(f"tickets/{ticket_id}").json())["predictions"]["category"] and t,
        timeout=300,
        what="classification of the new ticket",
        every=2,
    )
    assert ticket["predictions"]["category"]["model_version_id"] == active["category"]["id"]
    classify = api.post("tasks/ml/classify-ticket", {"ticket_id": ticket_id})
    assert classify.status_code == 202, classify.text
    done = api.wait_task(classify.json()["task_id"], {"SUCCESS", "FAILURE"})
    assert done["state"] == "SUCCESS", done
    assert done["worker"] == f"ml@{ml_host}"
    batch = api.post("tasks/ml/batch-classify", {"organization_id": org_id})
    assert batch.status_code == 202, batch.text
    assert api.wait_task(batch.json()["task_id"], {"SUCCESS", "FAILURE"})["state"] == "SUCCESS"

    # E-mail: a Dovecot of the test's on the stack's network; the sync worker fetches.
    imap_port = start_dovecot(prod_stack)
    user, password = DOVECOT_USER

    def seed() -> bool:
        try:
            with IMAPClient("127.0.0.1", port=imap_port, ssl=False, timeout=10) as client:
                client.login(user, password)
                client.append("INBOX", plain("VPN is down", "cannot reach the vpn from home"))
        except (OSError, imaplib.IMAP4.error):  # still starting: the port answers, then EOF
            return False
        return True

    wait_until(seed, timeout=60, what="the test Dovecot", every=1)
    mailbox = api.post(
        "integrations/mailboxes/",
        {
            "organization": org_id,
            "name": "support",
            "host": "dovecot",
            "port": 143,
            "security": "none",
            "username": user,
            "password": password,
        },
    )
    assert mailbox.status_code == 201, mailbox.text
    assert "password" not in mailbox.json()
    sync = api.post("tasks/sync/email", {"organization_id": org_id})
    assert sync.status_code == 202, sync.text
    synced = api.wait_task(sync.json()["task_id"], {"SUCCESS", "FAILURE"})
    assert synced["state"] == "SUCCESS", synced
    sync_host = prod_stack.container("celery_worker_sync")["Config"]["Hostname"]
    assert synced["worker"] == f"sync@{sync_host}"
    mail_ticket = wait_until(
        lambda: (
            (rows := api.get(f"tickets/?organization={org_id}&source=email").json()["results"])
            and rows[0]["predictions"]["category"]
            and rows[0]
        ),
        timeout=300,
        what="the e-mail's ticket, classified",
        every=2,
    )
    assert mail_ticket["subject"] == "VPN is down"

    # The remaining task endpoints: Slack sync (nothing configured), list, active, cancel, retry.
    slack = api.post("tasks/sync/slack", {"organization_id": org_id})
    assert slack.status_code == 202, slack.text
    assert api.wait_task(slack.json()["task_id"], {"SUCCESS", "FAILURE"})["state"] == "SUCCESS"
    listed = api.get(f"tasks/organization/{org_id}").json()
    assert listed["count"] >= 6
    assert api.get("tasks/active").status_code == 200
    queued = api.post("tasks/ml/train-model", {"organization_id": org_id}).json()["task_id"]
    cancelled = api.post(f"tasks/cancel/{queued}")
    assert cancelled.status_code in (200, 202), cancelled.text
    assert api.wait_task(queued, {"REVOKED", "SUCCESS"})["state"] == "REVOKED"
    retried = api.post(f"tasks/retry/{queued}")
    assert retried.status_code == 202, retried.text
    again = api.wait_task(retried.json()["task_id"], {"SUCCESS", "FAILURE"}, timeout=600)
    assert again["state"] == "SUCCESS", again
    assert again["retry_of"] == queued

    # /metrics with the token, refused without.
    token = prod_stack.env["ZENITH_METRICS_TOKEN"]
    metrics = requests.get(
        f"{prod_stack.web}/metrics",
        headers={"Authorization": f"Bearer {token}", "Host": PUBLIC_HOST},
        timeout=30,
    )
    assert metrics.status_code == 200
    families = {family.name for family in text_string_to_metric_families(metrics.text)}
    assert any(name.startswith("zenith_") for name in families), sorted(families)[:20]
    bare = requests.get(f"{prod_stack.web}/metrics", headers={"Host": PUBLIC_HOST}, timeout=30)
    assert bare.status_code in (401, 403)

    # Prometheus (monitoring profile) scrapes web by its service name with the compose secret.
    prometheus_started = time.monotonic()
    prod_stack.up("prometheus")
    target = wait_until(
        lambda: [
            t
            for t in requests.get(f"{prod_stack.prometheus}/api/v1/targets", timeout=10).json()[
                "data"
            ]["activeTargets"]
            if t["health"] == "up"
        ],
        timeout=180,
        what="Prometheus scraping web",
        every=3,
    )
    assert target[0]["scrapeUrl"] == "http://web:8000/metrics"
    scraped = requests.get(
        f"{prod_stack.prometheus}/api/v1/query",
        params={"query": 'count({job="zenith", __name__=~"zenith_.*"})'},
        timeout=10,
    ).json()["data"]["result"]
    assert scraped, "no zenith_* series scraped"
    assert int(scraped[0]["value"][1]) > 0
    timed("prometheus scraping", prometheus_started)

    # Beat's heartbeat (health_check_tasks every minute) advances.
    wait_until(
        lambda: (
            api.get("tasks/health").json()["checks"]["beat"].get("last_heartbeat")
            not in (None, first_heartbeat)
        ),
        timeout=150,
        what="a newer beat heartbeat",
        every=5,
    )
    timed("task flow, e-mail, metrics, beat", started)


def container_states(stack: Stack) -> dict[str, tuple[str, str, int]]:
    """Long-running container -> (id, started at, restart count)."""
    return {
        info["Name"].lstrip("/"): (
            info["Id"],
            info["State"]["StartedAt"],
            info["RestartCount"],
        )
        for info in stack.containers()
        if info["Config"]["Labels"].get("com.docker.compose.service") != "migrate"
    }


ENQUEUE = """
import json
from taskops import services
print(json.dumps([services.task_enqueue(name=NAME, kwargs={}) for _ in range(COUNT)]))
""".replace("NAME", repr(HEARTBEAT)).replace("COUNT", str(KILL_TASKS))

OUTCOME = """
import json, sys
from collections import Counter
from django_celery_results.models import TaskResult
from taskops.models import TaskRecord
ids = json.load(sys.stdin)
records = TaskRecord.objects.filter(task_id__in=ids)
results = TaskResult.objects.filter(task_id__in=ids)
print(json.dumps({
    "ledger_rows": records.count(),
    "ledger_ids": len(set(records.values_list("task_id", flat=True))),
    "ledger_states": Counter(records.values_list("state", flat=True)),
    "result_rows": results.count(),
    "result_states": Counter(results.values_list("status", flat=True)),
    "workers": Counter(records.values_list("worker", flat=True)),
    "redelivered": sum(1 for r in records if any(a.get("worker_lost") for a in r.attempts or [])),
    "not_success": [
        [r.task_id, r.state, r.attempts] for r in records.exclude(state="SUCCESS")[:5]
    ],
    "missing": len(set(ids) - set(records.values_list("task_id", flat=True))),
}, default=str))
"""


def test_killing_the_general_worker_container_under_1000_queued_tasks(prod_stack: Stack, api: Api):
    started = time.monotonic()
    worker = prod_stack.container("celery_worker")
    before = container_states(prod_stack)
    ids = prod_stack.shell(ENQUEUE)
    assert len(set(ids)) == KILL_TASKS

    def done() -> int:
        # psql in the postgres container: much quicker than a Django shell.
        count = prod_stack.exec(
            "postgres",
            "psql",
            "-U",
            "zenith",
            "-d",
            "zenith",
            "-tAc",
            "SELECT count(*) FROM taskops_taskrecord"
            " WHERE name = 'taskops.tasks.health_check_tasks' AND state = 'SUCCESS'",
        )
        return int(count.strip())

    already = done()  # beat's own heartbeats so far
    wait_until(lambda: done() >= already + 100, timeout=300, what="100 tasks done", every=0.2)
    subprocess.run(["docker", "kill", worker["Id"]], check=True, capture_output=True)
    done_before_kill = done() - already
    assert done_before_kill < KILL_TASKS, "the kill came after the last task"
    time.sleep(3)
    killed = json.loads(
        subprocess.run(
            ["docker", "inspect", worker["Id"]], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert killed["State"]["Running"] is False
    assert killed["State"]["ExitCode"] == 137

    prod_stack.up()
    outcomes: list[dict[str, Any]] = []

    def all_done() -> bool:
        outcomes.append(prod_stack.shell(OUTCOME, input=json.dumps(ids)))
        return outcomes[-1]["ledger_states"].get("SUCCESS") == KILL_TASKS

    try:
        wait_until(all_done, timeout=600, what="every queued task SUCCESS", every=5)
    finally:
        print("last outcome:", outcomes[-1] if outcomes else None)
    outcome = outcomes[-1]
    # One ledger row and one result per task, all SUCCESS: nothing lost, nothing doubled.
    assert outcome["ledger_rows"] == outcome["ledger_ids"] == KILL_TASKS
    assert outcome["ledger_states"] == {"SUCCESS": KILL_TASKS}
    assert outcome["result_rows"] == KILL_TASKS
    assert outcome["result_states"] == {"SUCCESS": KILL_TASKS}
    # Only what the dead worker held unacked ran again (concurrency 2, prefetch 1).
    assert outcome["redelivered"] <= 4, outcome
    assert set(outcome["workers"]) == {f"general@{worker['Config']['Hostname']}"}

    # The same container came back; nothing else was restarted or recreated.
    after = container_states(prod_stack)
    name = worker["Name"].lstrip("/")
    assert after[name][0] == worker["Id"]
    assert after[name][1] != before[name][1]
    assert {k: v for k, v in after.items() if k != name} == {
        k: v for k, v in before.items() if k != name
    }
    assert service_health(prod_stack, "celery_worker") == "healthy"
    timed(f"worker kill under {KILL_TASKS} tasks", started)


def test_three_general_workers_with_scale(prod_stack: Stack, api: Api):
    started = time.monotonic()
    prod_stack.up("--scale", "celery_worker=3")
    workers = prod_stack.containers("celery_worker")
    assert len(workers) == 3
    for info in workers:
        assert info["State"]["Health"]["Status"] == "healthy"
    expected = {f"general@{info['Config']['Hostname']}" for info in workers}
    assert len(expected) == 3
    names: Any = wait_until(
        lambda: (
            (r := api.get("tasks/health")).status_code == 200
            and expected <= set(r.json()["checks"]["workers"]["names"])
            and r.json()["checks"]["workers"]
        ),
        timeout=120,
        what="three general workers in tasks/health",
        every=3,
    )
    assert names["per_queue"]["default"] == 3
    assert names["per_queue"]["ml_tasks"] == names["per_queue"]["sync_tasks"] == 1
    timed("scale celery_worker=3", started)
