"""Priority routing: a new ticket is classified while a long bulk batch still runs."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db.models import Count

from mlmodels import services
from mlmodels.models import ModelVersion, Prediction
from taskops.models import TaskRecord, TaskState
from taskops.services import task_enqueue
from tests.mlmodels.conftest import unlabelled_tickets, wait_until
from tickets.models import Ticket

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.django_db(transaction=True)]

BATCH = "mlmodels.tasks.batch_classify_tickets_task"
BULK = 4000
SLICE = 200
TRAINING = 300  # the labelled tickets the model learnt from: unclassified by it too
ALL = TRAINING + BULK


@pytest.fixture
def trained(organization, import_sample, broker):
    if not settings.CELERY_BROKER_URL.startswith("redis://"):
        pytest.skip("message priorities need the Redis broker (the filesystem one is FIFO)")
    import_sample(organization, n=TRAINING)
    services.organization_models_train(organization=organization)
    return list(ModelVersion.objects.filter(organization=organization, status="active"))


def test_a_new_ticket_is_classified_before_a_long_batch_on_the_same_worker_ends(
    organization, trained, processes, worker_env, api_client
):
    bulk = unlabelled_tickets(organization, BULK)
    worker = processes.worker(
        worker_type="ml", concurrency=1, env={**worker_env, "ZENITH_BATCH_SLICE_SIZE": str(SLICE)}
    )
    batch_id = task_enqueue(name=BATCH, kwargs={"organization_id": organization.pk})

    def batch() -> TaskRecord:
        return TaskRecord.objects.get(task_id=batch_id)

    wait_until(lambda: (batch().progress or {}).get("done", 0) >= SLICE, timeout=120)

    # A ticket arrives through the API: its classification is queued behind the batch's
    # next slice message but at a higher priority.
    response = api_client.post(
        "/api/v1/tickets/",
        {"organization": organization.pk, "subject": "VPN down", "body": "Cannot connect to VPN"},
        format="json",
    )
    assert response.status_code == 201, response.content
    new_id = response.json()["id"]

    wait_until(
        lambda: Prediction.objects.filter(ticket_id=new_id).count() == len(trained), timeout=60
    )
    record = batch()
    assert record.state in (TaskState.PROGRESS, TaskState.STARTED), record.state
    assert record.progress["done"] < ALL, record.progress

    # The batch goes on from where it was and classifies every other ticket exactly once,
    # all under its one task id.
    wait_until(lambda: batch().state == TaskState.SUCCESS, timeout=300, interval=0.5)
    record = batch()
    assert record.result["tickets"] == ALL
    assert record.progress == {
        "done": ALL,
        "total": ALL,
        "message": f"{ALL}/{ALL} tickets classified",
    }
    per_ticket = (
        Prediction.objects.filter(ticket__in=bulk)
        .values("ticket_id")
        .annotate(n=Count("id"))
        .values_list("n", flat=True)
    )
    assert len(per_ticket) == BULK
    assert set(per_ticket) == {len(trained)}
    assert Ticket.objects.filter(organization=organization).count() == ALL + 1
    assert f"{BATCH}[{batch_id}] succeeded" in worker.log()
