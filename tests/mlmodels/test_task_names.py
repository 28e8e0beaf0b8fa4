"""Task names and queues are a contract (README, "Celery tasks"): scripts and schedules use them."""

from __future__ import annotations

import pytest

from zenith.celery import app

ML_TASKS = [
    "mlmodels.tasks.classify_ticket_task",
    "mlmodels.tasks.batch_classify_tickets_task",
    "mlmodels.tasks.train_organization_model_task",
    "mlmodels.tasks.train_all_organizations_task",
]


@pytest.mark.parametrize("name", ML_TASKS)
def test_ml_tasks_are_registered_idempotent_and_routed_to_ml_tasks(name):
    app.loader.import_default_modules()
    task = app.tasks[name]

    assert task.acks_late is True
    assert task.reject_on_worker_lost is True
    assert app.amqp.router.route({}, name)["queue"].name == "ml_tasks"
