"""/metrics: Prometheus text from the ledger, for a bearer token or a staff session."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskops import services
from taskops.models import TaskState
from tests.taskops.helpers import wait_for_state

TOKEN = "scrape-me-please"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics_token(settings) -> str:
    settings.ZENITH_METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.mark.slow
def test_metrics_show_the_states_of_tasks_just_run(processes, client, metrics_token, organization):
    processes.worker(worker_type="general", concurrency=2)
    org = {"organization_id": organization.pk}
    ok = [services.task_enqueue(name="taskops.tasks.noop", kwargs=org) for _ in range(3)]
    bad = services.task_enqueue(name="taskops.tasks.diagnostic_fail", kwargs={"permanent": True})
    for task_id in ok:
        wait_for_state(task_id, TaskState.SUCCESS)
    wait_for_state(bad, TaskState.FAILURE)
    services.heartbeat_record(name="beat")
    queued = services.task_enqueue(name="mlmodels.tasks.train_all_organizations_task", kwargs={})

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {metrics_token}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    values = samples(response.content.decode())
    noop, fail = "taskops.tasks.noop", "taskops.tasks.diagnostic_fail"
    assert values[("zenith_tasks", (("name", noop), ("state", "SUCCESS")))] == 3
    assert values[("zenith_tasks", (("name", noop), ("state", "FAILURE")))] == 0
    assert values[("zenith_tasks", (("name", fail), ("state", "FAILURE")))] == 1
    assert values[("zenith_tasks_finished_last_hour", (("name", noop), ("state", "SUCCESS")))] == 3
    assert values[("zenith_task_runtime_avg_seconds", (("name", noop),))] >= 0
    assert values[("zenith_task_runtime_max_seconds", (("name", fail),))] >= 0
    assert values[("zenith_queue_waiting_tasks", (("queue", "ml_tasks"),))] == 1
    assert values[("zenith_queue_depth", (("queue", "ml_tasks"),))] == 1
    assert 0 <= values[("zenith_beat_heartbeat_age_seconds", ())] < 60
    assert queued


@pytest.mark.django_db
def test_metrics_need_the_token_or_a_staff_session(client, metrics_token, make_user, make_record):
    make_record(state=TaskState.PENDING)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics/", HTTP_AUTHORIZATION=f"Bearer {metrics_token}").status_code == 200

    client.force_login(make_user(username="nina"))
    assert client.get("/metrics").status_code == 401
    client.force_login(make_user(username="sam", is_staff=True))
    response = client.get("/metrics")
    assert response.status_code == 200
    values = samples(response.content.decode())
    assert values[("zenith_tasks", (("name", "taskops.tasks.noop"), ("state", "PENDING")))] == 1


@pytest.mark.django_db
def test_no_token_configured_accepts_no_bearer(client, settings, make_record):
    settings.ZENITH_METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
