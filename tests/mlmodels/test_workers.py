"""Classification on real worker processes: redelivery, and a refused artifact on record."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage
from django.db.models import Count
from django_celery_results.models import TaskResult

from mlmodels import services
from mlmodels.models import ModelVersion, Prediction
from tests.mlmodels.conftest import unlabelled_tickets, wait_until
from zenith.celery import app

pytestmark = pytest.mark.django_db(transaction=True)

BATCH = "mlmodels.tasks.batch_classify_tickets_task"


@pytest.fixture
def trained(organization, import_sample, broker):
    import_sample(organization, n=300)
    services.organization_models_train(organization=organization)
    return {
        v.target: v for v in ModelVersion.objects.filter(organization=organization, status="active")
    }


@pytest.mark.slow
def test_2000_tickets_delivered_twice_get_exactly_one_prediction_per_version(
    organization, trained, processes, worker_env
):
    tickets = unlabelled_tickets(organization, 2000)
    ids = [t.pk for t in tickets]
    worker = processes.worker(worker_type="ml", concurrency=2, env=worker_env)

    # The same message twice, as a broker or an outbox re-publish delivers it: the ledger lets
    # one copy run the task (a copy arriving between two slices may run the rest), the other
    # is dropped ("this copy of it does nothing"); the unique keys hold either way.
    for _ in range(2):
        app.send_task(
            BATCH, kwargs={"organization_id": organization.pk, "ticket_ids": ids}, task_id="twice"
        )

    def finished() -> bool:
        log = worker.log()
        return f"{BATCH}[twice] succeeded" in log and (
            log.count(f"{BATCH}[twice] succeeded") == 2 or "does nothing" in log
        )

    wait_until(finished, timeout=180)
    for version in trained.values():
        rows = Prediction.objects.filter(model_version=version, ticket_id__in=ids)
        assert rows.count() == 2000
        assert not rows.values("ticket").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert set(rows.values_list("ticket_id", flat=True)) == set(ids)
    result = TaskResult.objects.get(task_id="twice")
    assert result.status == "SUCCESS"
    assert '"tickets": 2000' in result.result


def test_a_tampered_artifact_fails_the_classify_task_with_a_clear_message(
    organization, trained, processes, worker_env, api_client
):
    ticket = unlabelled_tickets(organization, 1)[0]
    version = trained["category"]
    with default_storage.open(version.artifact.name, "rb") as handle:
        data = bytearray(handle.read())
    data[-100] ^= 0xFF
    with default_storage.open(version.artifact.name, "wb") as handle:
        handle.write(bytes(data))
    processes.worker(worker_type="ml", concurrency=1, env=worker_env)

    task_id = app.send_task(
        "mlmodels.tasks.classify_ticket_task",
        kwargs={"ticket_id": ticket.pk, "organization_id": organization.pk},
    ).id

    row = wait_until(lambda: TaskResult.objects.filter(task_id=task_id, status="FAILURE").first())
    assert "ArtifactError" in row.result
    assert "was altered: sha256" in row.result
    assert "Traceback" in (row.traceback or "")

    # The task ledger shows the failure and why.
    def ledger() -> dict | None:
        response = api_client.get(f"/api/v1/tasks/status/{task_id}")
        return response.data if response.data.get("state") == "FAILURE" else None

    record = wait_until(ledger)
    assert record["name"] == "mlmodels.tasks.classify_ticket_task"
    assert "was altered: sha256" in record["error"]
    version.refresh_from_db()
    assert "was altered" in version.error
    assert not Prediction.objects.filter(ticket=ticket).exists()
