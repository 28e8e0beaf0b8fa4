"""ML tasks against the same work done in-process, on the same texts, in one run.

Task figures are the worker's own time (the task result's STARTED to SUCCESS), so broker
pick-up latency is left out of 1 and 2; 3 is end to end (publish to the last SUCCESS).

1. batch classification through `batch_classify_tickets_task` on a real worker (DB read,
   predict with confidence and top terms for every active target, bulk write) against
   in-process `pipeline.predict` of the same pipelines on the same 2,000 texts;
2. the wall time of `train_organization_model_task` (read labels, split, grid search,
   evaluate, refit on all, serialize, store, gate) against in-process fit + serialize + save
   of the configuration it chose, on all labelled tickets;
3. classify-ticket tasks per second against `taskops.tasks.noop` tasks per second on the
   same worker;
4. in-process training with model selection against the training it replaced (a fixed
   configuration, 5-fold calibration ensemble), and the grid search alone against one fit
   of the configuration it chose;
5. the predict path of one ticket for both targets (mlmodels.inference, what the classify
   task runs) against `training.predict` through the scikit-learn pipelines, p50 ms;
6. batch classification at scale: SCALE_TICKETS (100,000; ZENITH_BENCH_ML_SCALE) unclassified
   tickets, generated with INSERT ... SELECT from the data set's texts, classified by one ml
   worker (concurrency 2) through `batch_classify_tickets_task` (slices and priorities as in
   production), against in-process `pipeline.predict` of both pipelines on the same texts.

    python -m bench.bench_ml          # or: make bench (every benchmark)

Database: with no DATABASE_URL a throwaway SQLite file in a temporary directory; with
DATABASE_URL=postgresql://… a throwaway database ``bench_<name>`` on that server, created
and dropped by the run. Broker: the configured Redis (its queues purged) when
CELERY_BROKER_URL=redis://…, else a throwaway ``filesystem://`` folder (3 is then skipped:
that transport polls once a second). One worker process
(`scripts/start_celery_worker.py worker --worker-type all --concurrency 1`).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import setup_django, teardown_django

TICKETS = 2000
SINGLE_TASKS = 150
REPEATS = 3
SINGLE_REPEATS = 5
TRAIN_REPEATS = 2
PREDICT_TEXTS = 400
SCALE_TICKETS = int(os.environ.get("ZENITH_BENCH_ML_SCALE", "100000"))


def _setup_django(tmp: Path) -> str:
    """Django on a throwaway database and broker (bench.common); returns the database."""
    return setup_django(tmp, name="ml", keep_redis_broker=True)


def _purge() -> None:
    from zenith.celery import app

    with app.connection_for_write() as connection:
        for queue in ("default", "ml_tasks", "sync_tasks"):
            try:
                connection.default_channel.queue_purge(queue)
            except Exception:  # noqa: S112 - an undeclared queue holds nothing
                continue


def _wait(task_ids: list[str], timeout: float = 600) -> float:
    """Block until every task succeeded; returns the monotonic time it happened."""
    from django_celery_results.models import TaskResult

    deadline = time.monotonic() + timeout
    wanted = set(task_ids)
    while time.monotonic() < deadline:
        rows = dict(TaskResult.objects.filter(task_id__in=wanted).values_list("task_id", "status"))
        failed = [task_id for task_id, state in rows.items() if state == "FAILURE"]
        if failed:
            raise RuntimeError(f"task {failed[0]} failed")
        if sum(1 for state in rows.values() if state == "SUCCESS") == len(wanted):
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"{len(wanted)} tasks did not finish in {timeout}s")


def _runtime(task_id: str) -> float:
    """Seconds the worker spent on a finished task: its STARTED row to its SUCCESS."""
    from django_celery_results.models import TaskResult

    row = TaskResult.objects.get(task_id=task_id)
    return (row.date_done - row.date_created).total_seconds()


def _enqueue(name: str, kwargs: dict[str, Any]) -> str:
    from taskops.services import task_enqueue

    return task_enqueue(name=name, kwargs=kwargs, triggered_by="bench")


def _reset(ticket_ids: list[int]) -> None:
    """Make the tickets new again: no predictions, no model labels, nothing to review."""
    from mlmodels.models import Prediction
    from tickets.models import Ticket

    Prediction.objects.filter(ticket_id__in=ticket_ids).delete()
    Ticket.objects.filter(pk__in=ticket_ids).update(
        category="", category_source="", priority="", priority_source="", needs_review=False
    )


def _dataset(organization: Any) -> None:
    from tickets.demo import DEMO_DATASET
    from tickets.services import tickets_import_csv

    tickets_import_csv(
        organization=organization,
        path=DEMO_DATASET,
        text_columns=["title", "body"],
        label_columns={"category": "category", "priority": "urgency"},
    )


def _bench_training(organization: Any) -> dict[str, Any]:
    """Task wall time vs in-process fit + serialize + save of the configuration it chose."""
    import dataclasses

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from mlmodels import services, training
    from mlmodels.models import ModelVersion
    from tickets.selectors import ticket_training_examples

    examples = ticket_training_examples(organization=organization, target="category")
    texts = [text for _, text, _ in examples]
    labels = [label for _, _, label in examples]
    baselines, values = [], []
    for i in range(TRAIN_REPEATS):
        # Each run trains a first version (no active model).
        ModelVersion.objects.filter(organization=organization).delete()
        task_id = _enqueue(
            services.TRAIN_TASK, {"organization_id": organization.pk, "targets": ["category"]}
        )
        _wait([task_id])
        values.append(_runtime(task_id))
        version = ModelVersion.objects.get(organization=organization, target="category")
        chosen = version.selection["chosen"]
        params = dataclasses.replace(services.default_params(), **chosen)
        kept = [
            (t, label) for t, label in zip(texts, labels, strict=True) if label in version.labels
        ]
        started = time.perf_counter()
        pipeline = training.fit(
            texts=[t for t, _ in kept], labels=[label for _, label in kept], params=params
        )
        data = training.serialize(pipeline=pipeline)
        default_storage.save(f"bench/baseline-{i}.skops", ContentFile(data))
        baselines.append(time.perf_counter() - started)
    value, baseline = statistics.median(values), statistics.median(baselines)
    return {
        "name": "ml_train_task_wall_time",
        "value": round(value, 2),
        "baseline": round(baseline, 2),
        "ratio": round(value / baseline, 3),
        "unit": "s",
        "note": (
            f"train_organization_model_task (category, {len(texts)} labelled tickets: read, "
            "split, 9-candidate grid by 3-fold CV, hold-out fit and evaluation, refit on all, "
            "serialize, store, gate) on the worker, STARTED->SUCCESS, vs in-process fit "
            f"(temperature from 3-fold OOF scores) + serialize + save of the chosen configuration "
            f"({chosen}) on all {len(kept)} tickets of kept classes; median of {TRAIN_REPEATS}"
        ),
    }


def _bench_batch(organization: Any, ticket_ids: list[int]) -> dict[str, Any]:
    """Tickets/s through the batch task vs in-process pipeline.predict on the same texts."""
    from mlmodels import registry, selectors, services
    from mlmodels.models import Prediction
    from tickets.models import Ticket

    texts = [t.text for t in Ticket.objects.filter(pk__in=ticket_ids).order_by("id")]
    versions = selectors.model_versions_active(organization=organization)
    pipelines = [registry.model_load(version=version) for version in versions.values()]
    baselines, values = [], []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for pipeline in pipelines:
            pipeline.predict(texts)
        baselines.append(len(texts) / (time.perf_counter() - started))

        _reset(ticket_ids)
        task_id = _enqueue(
            services.BATCH_CLASSIFY_TASK,
            {"organization_id": organization.pk, "ticket_ids": ticket_ids},
        )
        _wait([task_id])
        values.append(len(ticket_ids) / _runtime(task_id))
        expected = len(ticket_ids) * len(versions)
        written = Prediction.objects.filter(ticket_id__in=ticket_ids).count()
        assert written == expected, (written, expected)
    value, baseline = statistics.median(values), statistics.median(baselines)
    return {
        "name": "ml_batch_classify_throughput",
        "value": round(value, 1),
        "baseline": round(baseline, 1),
        "ratio": round(value / baseline, 3),
        "unit": "tickets/s",
        "note": (
            f"batch_classify_tickets_task on {len(ticket_ids)} tickets ({len(versions)} active "
            "models: DB read, predict with confidence and top terms, bulk write, ticket updates, "
            "progress) on the worker, STARTED->SUCCESS, vs in-process pipeline.predict of the "
            "same pipelines on "
            f"the same texts; warm model cache; median of {REPEATS}; aim >= 0.5x"
        ),
    }


def _bench_single(organization: Any, ticket_ids: list[int]) -> dict[str, Any]:
    """classify_ticket_task per second vs a no-op task per second on the same worker."""
    from mlmodels import services
    from taskops import tasks as taskops_tasks

    # The taskops no-op when it exists, else its cheapest registered task.
    noop = (
        "taskops.tasks.noop"
        if hasattr(taskops_tasks, "noop")
        else "taskops.tasks.health_check_tasks"
    )

    def rate(name: str, kwargs_list: list[dict[str, Any]]) -> float:
        started = time.monotonic()
        ids = [_enqueue(name, kwargs) for kwargs in kwargs_list]
        return len(ids) / (_wait(ids) - started)

    if not os.environ["CELERY_BROKER_URL"].startswith("redis://"):
        return {
            "name": "ml_classify_ticket_task_rate",
            "note": (
                "skipped: the embedded filesystem:// broker hands a prefetch-1 worker about one "
                "message per polling second, whatever the task; run with CELERY_BROKER_URL=redis://…"
            ),
        }
    picked = ticket_ids[:SINGLE_TASKS]
    classify_rates, noop_rates = [], []
    # Alternating runs, compared pair by pair: a shared machine's load drifts between runs.
    for _ in range(SINGLE_REPEATS):
        noop_rates.append(rate(noop, [{} for _ in picked]))
        _reset(picked)
        classify_rates.append(
            rate(
                services.CLASSIFY_TASK,
                [{"ticket_id": pk, "organization_id": organization.pk} for pk in picked],
            )
        )
    ratio = statistics.median(c / n for c, n in zip(classify_rates, noop_rates, strict=True))
    return {
        "name": "ml_classify_ticket_task_rate",
        "value": round(statistics.median(classify_rates), 1),
        "baseline": round(statistics.median(noop_rates), 1),
        "ratio": round(ratio, 3),
        "unit": "tasks/s",
        "note": (
            f"{SINGLE_TASKS} classify_ticket_task (2 models) vs {SINGLE_TASKS} {noop} published "
            f"through task_enqueue, to the same worker (concurrency 1), publish->all SUCCESS; "
            f"median of {SINGLE_REPEATS} alternating pairs; aim >= 0.6x"
        ),
    }


def _bench_predict_one(organization: Any, ticket_ids: list[int]) -> dict[str, Any]:
    """p50 ms of one ticket's predictions, both targets: the serving path vs training.predict."""
    import sklearn

    from mlmodels import inference, registry, selectors, training
    from tickets.models import Ticket

    texts = [t.text for t in Ticket.objects.filter(pk__in=ticket_ids[:PREDICT_TEXTS])]
    versions = selectors.model_versions_active(organization=organization)
    pipelines = {target: registry.model_load(version=v) for target, v in versions.items()}
    inference.predict_all(pipelines=pipelines, texts=texts[:1])
    both, per_target, baseline = [], {target: [] for target in pipelines}, []
    with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
        for text in texts:
            started = time.perf_counter()
            inference.predict_all(pipelines=pipelines, texts=[text])
            both.append(time.perf_counter() - started)
            for target, pipeline in pipelines.items():
                started = time.perf_counter()
                inference.predict_all(pipelines={target: pipeline}, texts=[text])
                per_target[target].append(time.perf_counter() - started)
            started = time.perf_counter()
            for pipeline in pipelines.values():
                training.predict(pipeline=pipeline, texts=[text])
            baseline.append(time.perf_counter() - started)
    value, base = statistics.median(both) * 1000, statistics.median(baseline) * 1000
    targets = ", ".join(
        f"{target} {statistics.median(values) * 1000:.2f} ms"
        for target, values in per_target.items()
    )
    return {
        "name": "ml_predict_one_ticket_ms",
        "value": round(value, 3),
        "baseline": round(base, 3),
        "ratio": round(value / base, 3),
        "unit": "ms",
        "note": (
            f"label, confidence, margin and top terms of one ticket for both targets through "
            f"mlmodels.inference (one tokenisation per analysis, scores from coef_) vs "
            f"training.predict through both scikit-learn pipelines; p50 over {len(texts)} "
            f"tickets, in-process; alone per target: {targets}; aim <= 3 ms"
        ),
    }


def _tickets_generate(organization: Any, n: int) -> list[int]:
    """`n` unclassified API tickets with the organization's texts repeated, by INSERT ... SELECT."""
    from django.db import connection

    from tickets.models import Source, Ticket

    table = Ticket._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH texts AS (
                SELECT row_number() OVER (ORDER BY id) - 1 AS i, subject, body
                FROM {table} WHERE organization_id = %(org)s AND source = 'import'
            )
            INSERT INTO {table} (organization_id, source, external_id, subject, body, requester,
                status, category, category_source, priority, priority_source, needs_review,
                created_at, updated_at)
            SELECT %(org)s, %(source)s, '', t.subject, t.body, '', 'new', '', '', '', '', false,
                now(), now()
            FROM generate_series(0, %(n)s - 1) AS g(k)
            JOIN texts t ON t.i = g.k %% (SELECT count(*) FROM texts)
            """,  # noqa: S608 - the table name comes from the model
            {"org": organization.pk, "source": Source.API.value, "n": n},
        )
    return list(
        Ticket.objects.filter(organization=organization, source=Source.API)
        .order_by("id")
        .values_list("id", flat=True)
    )


def _bench_batch_scale(organization: Any, manager: Any) -> dict[str, Any]:
    """SCALE_TICKETS tickets by one ml worker (concurrency 2) vs in-process pipeline.predict."""
    from mlmodels import registry, selectors, services
    from mlmodels.models import Prediction
    from tickets.models import Source, Ticket

    Ticket.objects.filter(organization=organization, source=Source.API).delete()
    started = time.perf_counter()
    ticket_ids = _tickets_generate(organization, SCALE_TICKETS)
    generated = time.perf_counter() - started
    texts = [
        f"{subject} {body}".strip()
        for subject, body in Ticket.objects.filter(pk__in=ticket_ids)
        .order_by("id")
        .values_list("subject", "body")
        .iterator(chunk_size=5000)
    ]
    versions = selectors.model_versions_active(organization=organization)
    pipelines = [registry.model_load(version=version) for version in versions.values()]
    started = time.perf_counter()
    for pipeline in pipelines:
        pipeline.predict(texts)
    baseline = time.perf_counter() - started
    del texts
    worker = manager.worker(worker_type="ml", concurrency=2)
    try:
        task_id = _enqueue(services.BATCH_CLASSIFY_TASK, {"organization_id": organization.pk})
        started = time.monotonic()
        _wait([task_id], timeout=3 * 3600)
        value = time.monotonic() - started
    finally:
        worker.stop()
    written = Prediction.objects.filter(ticket_id__in=ticket_ids).count()
    assert written == len(ticket_ids) * len(versions), (written, len(ticket_ids))
    return {
        "name": "ml_batch_classify_scale",
        "value": round(value, 1),
        "baseline": round(baseline, 1),
        "ratio": round(value / baseline, 3),
        "unit": "s",
        "note": (
            f"{len(ticket_ids)} unclassified tickets (generated by INSERT ... SELECT in "
            f"{generated:.1f} s) classified by batch_classify_tickets_task on one ml worker "
            f"(concurrency 2; slices of {_slice_size()} tickets, each a new message at bulk "
            f"priority), publish->SUCCESS, vs in-process pipeline.predict of the "
            f"{len(versions)} pipelines on the same texts; aim <= 2x"
        ),
    }


def _slice_size() -> int:
    from django.conf import settings

    return int(settings.ZENITH_BATCH_SLICE_SIZE)


def run() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="zenith-bench-ml-") as name:
        tmp = Path(name)
        database = _setup_django(tmp)

        from mlmodels import registry, services
        from tests.support.workers import ProcessManager
        from tickets.models import Source, Ticket
        from tickets.services import organization_get_or_create

        _purge()
        manager = ProcessManager(tmp)
        try:
            organization, _ = organization_get_or_create(slug="bench-ml")
            _dataset(organization)
            worker = manager.worker(worker_type="all", concurrency=1)
            # The grid's cost and training against the pre-#19 one: bench/bench_training.py.
            rows = [_bench_training(organization)]
            # Serve both targets, as a real organization does.
            services.model_train(organization=organization, target="priority")
            fresh = [
                Ticket(organization=organization, source=Source.API, subject=t.subject, body=t.body)
                for t in Ticket.objects.filter(organization=organization).order_by("id")[:TICKETS]
            ]
            Ticket.objects.bulk_create(fresh)
            ticket_ids = list(
                Ticket.objects.filter(organization=organization, source=Source.API)
                .order_by("id")
                .values_list("id", flat=True)
            )
            # Warm the worker's model cache, as a serving worker's is.
            _wait([_enqueue(services.CLASSIFY_TASK, {"ticket_id": ticket_ids[0]})], timeout=120)
            rows.append(_bench_batch(organization, ticket_ids))
            rows.append(_bench_single(organization, ticket_ids))
            rows.append(_bench_predict_one(organization, ticket_ids))
            assert worker.alive()
            if database == "postgresql" and SCALE_TICKETS:
                worker.stop()
                rows.append(_bench_batch_scale(organization, manager))
            broker = os.environ["CELERY_BROKER_URL"].split("@")[-1]
            for row in rows:
                row["note"] += f"; {database}, broker {broker}"
        finally:
            manager.stop_all()
            registry.cache_clear()
            _purge()
            teardown_django(database)
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
