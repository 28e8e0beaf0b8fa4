"""How long a new ticket waits for its classification while the ML worker is busy with bulk work.

    python -m bench bench_priority
    ZENITH_BENCH_PRIORITY_BULK=5000 ZENITH_BENCH_PRIORITY_NEW=9 python -m bench bench_priority

An organization with both models (category, priority) trained on TRAINING labelled tickets.
One ML worker (scripts/start_celery_worker.py worker --worker-type ml --concurrency 1, its
model cache warm) gets bulk work: a batch re-classification of every unclassified ticket
(ZENITH_BENCH_PRIORITY_BULK, default 1,100, new ones and the labelled ones) and, queued
behind it, REFRESH_TASKS batch tasks for explicit lists of REFRESH_SIZE tickets classified
before. Once the batch runs, ZENITH_BENCH_PRIORITY_NEW (default 5) tickets are created
through `ticket_create` (which enqueues `classify_ticket_task` on commit), GAP seconds
apart. A ticket's latency is its row's `created_at` to the newest of its predictions'
`created_at` (set by the worker just before the INSERT that stores them).

Three configurations, each on a fresh worker and with a publisher process of its own:
message priorities come from the routes in the settings of whichever process publishes
(the publisher for the bulk and the new tickets, the worker for a batch's next slice), so
both get the configuration's environment before Django starts.

a. one batch task, FIFO (ZENITH_TASK_PRIORITIES=0, ZENITH_BATCH_SLICE_SIZE=1000000): baseline;
b. slices, FIFO (ZENITH_TASK_PRIORITIES=0, ZENITH_BATCH_SLICE_SIZE=SLICE);
c. slices and priorities, as shipped (ZENITH_BATCH_SLICE_SIZE=SLICE).

Rows: the median latency of b and c against a (ratio = a / value: higher is better), and the
bulk throughput of c against a (tickets the bulk tasks classified per second, from their
publish to the end of the last one, and per second of the worker's CPU time): what slicing
and re-queueing cost. One run of each configuration: on a shared machine the wall-time
throughput moves by tens of percent between runs, the CPU figure much less. Throwaway database
(bench.common.setup_django) and the Redis broker of CELERY_BROKER_URL, whose queues are
purged; without Redis the rows say skipped (the filesystem broker has no priorities).

`run()` returns rows {"name", "value", "baseline", "ratio", "unit", "note"} for `make bench`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, database_url, production_env, setup_django, teardown_django, worker

TRAINING = 400
REFRESH_TASKS = 3
REFRESH_SIZE = 1000
SLICE = 500
GAP = 0.25
FIRST_DELAY = 0.5
POLL = 0.05
TIMEOUT = 300.0
MARKER = "BENCH_PRIORITY_JSON:"
QUEUES = ("default", "ml_tasks", "sync_tasks")
CONFIGS = {
    "a": (
        "one batch task, FIFO",
        {"ZENITH_TASK_PRIORITIES": "0", "ZENITH_BATCH_SLICE_SIZE": "1000000"},
    ),
    "b": ("slices, FIFO", {"ZENITH_TASK_PRIORITIES": "0", "ZENITH_BATCH_SLICE_SIZE": str(SLICE)}),
    "c": (
        "slices + priorities",
        {"ZENITH_TASK_PRIORITIES": "1", "ZENITH_BATCH_SLICE_SIZE": str(SLICE)},
    ),
}


def _bulk() -> int:
    return int(os.environ.get("ZENITH_BENCH_PRIORITY_BULK", "1100"))


def _new() -> int:
    return int(os.environ.get("ZENITH_BENCH_PRIORITY_NEW", "5"))


def _skipped(note: str) -> list[dict[str, Any]]:
    names = (
        ("priority_new_ticket_latency_slices_fifo", "ms"),
        ("priority_new_ticket_latency_shipped", "ms"),
        ("priority_bulk_throughput", "tickets/s"),
        ("priority_bulk_tickets_per_worker_cpu_second", "tickets/cpu-s"),
    )
    return [
        {"name": name, "value": None, "baseline": None, "ratio": None, "unit": unit, "note": note}
        for name, unit in names
    ]


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _purge() -> None:
    """Empty the broker's queues (every priority list of each)."""
    from zenith.celery import app

    with app.connection_for_write() as connection:
        for queue in QUEUES:
            try:
                connection.default_channel.queue_purge(queue)
            except Exception:  # noqa: S112 - an undeclared queue holds nothing
                continue


def _wait(check: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen in {timeout:g}s")
        time.sleep(POLL)


def _records_done(task_ids: list[str]) -> bool:
    """Whether every task succeeded; a failed one stops the run."""
    from taskops.models import TaskRecord, TaskState

    states = dict(TaskRecord.objects.filter(task_id__in=task_ids).values_list("task_id", "state"))
    failed = [task_id for task_id, state in states.items() if state == TaskState.FAILURE]
    if failed:
        raise RuntimeError(f"task {failed[0]} failed")
    return len(states) == len(task_ids) and all(s == TaskState.SUCCESS for s in states.values())


# ------------------------------------------------------------------------------
# The parent: data, workers, one publisher process per configuration
# ------------------------------------------------------------------------------


def _dataset_rows() -> list[dict[str, str]]:
    from tickets.demo import DEMO_DATASET

    with DEMO_DATASET.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # The file is sorted: a seeded shuffle gives the training sample every priority class.
    random.Random(0).shuffle(rows)
    return rows


def _dataset(tmp: Path) -> dict[str, Any]:
    """A trained organization, its unclassified bulk and its already-classified refresh lists."""
    from mlmodels import services
    from tickets.models import Source, Ticket
    from tickets.services import organization_get_or_create, tickets_import_csv

    rows = _dataset_rows()
    organization, _ = organization_get_or_create(slug="bench-priority")
    path = tmp / "training.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:TRAINING])
    tickets_import_csv(
        organization=organization,
        path=path,
        text_columns=["title", "body"],
        label_columns={"category": "category", "priority": "urgency"},
    )
    services.organization_models_train(organization=organization)
    texts = [(row["title"][:500], row["body"]) for row in rows[TRAINING:]]

    def create(count: int, offset: int) -> list[int]:
        fresh = [
            Ticket(organization=organization, source=Source.API, subject=subject, body=body)
            for subject, body in (texts[(offset + i) % len(texts)] for i in range(count))
        ]
        return [ticket.pk for ticket in Ticket.objects.bulk_create(fresh)]

    bulk = create(_bulk(), 0)
    refresh = [create(REFRESH_SIZE, _bulk() + i * REFRESH_SIZE) for i in range(REFRESH_TASKS)]
    # Classified once here, so the batch of everything unclassified leaves them out.
    for ids in refresh:
        services.tickets_classify(organization=organization, ticket_ids=ids)
    training = list(
        Ticket.objects.filter(organization=organization, source=Source.IMPORT).values_list(
            "id", flat=True
        )
    )
    return {
        "organization_id": organization.pk,
        "unclassified": training + bulk,
        "bulk": bulk,
        "refresh": refresh,
        "new": [texts[-1 - i] for i in range(_new())],
    }


def _reset(data: dict[str, Any]) -> None:
    """The batch's tickets unclassified again: no predictions, no model labels."""
    from django.db import connection

    from mlmodels.models import Prediction
    from tickets.models import Ticket

    Prediction.objects.filter(ticket_id__in=data["unclassified"]).delete()
    Ticket.objects.filter(pk__in=data["bulk"]).update(
        category="", category_source="", priority="", priority_source="", needs_review=False
    )
    if connection.vendor == "postgresql":
        # Every configuration starts from the same tables, not from the last one's dead rows.
        with connection.cursor() as cursor:
            for model in (Prediction, Ticket):
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


def _warm(data: dict[str, Any]) -> None:
    """One classification on the fresh worker: its model cache is warm, as a serving one's is."""
    from mlmodels import services
    from taskops.services import task_enqueue

    task_id = task_enqueue(
        name=services.CLASSIFY_TASK,
        kwargs={"ticket_id": data["refresh"][0][0], "organization_id": data["organization_id"]},
        triggered_by="bench",
    )
    _wait(lambda: _records_done([task_id]), "the warm-up classification", timeout=120)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a worker and its pool processes (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for each in [pid, *map(int, children)]:
        stat = Path(f"/proc/{each}/stat").read_text()
        # Fields after the command name: utime and stime are the 12th and 13th.
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _publish(env: dict[str, str], data: dict[str, Any]) -> dict[str, Any]:
    plan = {key: data[key] for key in ("organization_id", "refresh", "new")}
    process = subprocess.run(
        [sys.executable, "-m", "bench.bench_priority", "--publish", json.dumps(plan)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 120,
        check=False,
    )
    for line in process.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line.removeprefix(MARKER))
    raise RuntimeError(
        f"the publisher failed (exit {process.returncode}):\n"
        f"{process.stdout[-2000:]}\n{process.stderr[-3000:]}"
    )


def run() -> list[dict[str, Any]]:
    """Measure and return the rows `make bench` collects."""
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("redis://"):
        return _skipped("skipped: needs CELERY_BROKER_URL=redis://… (priorities are Redis's)")
    if not _redis_reachable(broker):
        return _skipped(f"skipped: Redis at {broker} is not reachable")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="zenith-bench-priority-") as name:
        tmp = Path(name)
        database = setup_django(tmp, name="priority", keep_redis_broker=True)

        from mlmodels import registry

        try:
            _purge()
            data = _dataset(tmp)
            for key, (_, config_env) in CONFIGS.items():
                _reset(data)
                env = {
                    **os.environ,
                    **production_env(),
                    "DATABASE_URL": database_url(),
                    **config_env,
                }
                with worker(
                    log=tmp / f"worker-{key}.log",
                    env=env,
                    worker_type="ml",
                    concurrency=1,
                    name=f"bench-priority-{key}",
                ) as process:
                    _warm(data)
                    cpu = _cpu_seconds(process.pid)
                    results[key] = _publish(env, data)
                    results[key]["cpu"] = _cpu_seconds(process.pid) - cpu
                _purge()
        finally:
            registry.cache_clear()
            _purge()
            teardown_django(database)
    return _rows(results, database)


def _rows(results: dict[str, dict[str, Any]], database: str) -> list[dict[str, Any]]:
    def median(key: str) -> float:
        return statistics.median(results[key]["latencies"]) * 1000

    def spread(key: str) -> str:
        values = sorted(results[key]["latencies"])
        return f"{values[0] * 1000:.0f}-{values[-1] * 1000:.0f} ms"

    a = results["a"]
    setup = (
        f"1 ml worker (concurrency 1) busy with a batch of {a['batch_tickets']} unclassified "
        f"tickets + {REFRESH_TASKS} batch tasks of {REFRESH_SIZE} listed tickets queued behind "
        f"it; {_new()} new tickets through ticket_create {GAP:g} s apart once the batch runs; "
        f"{database}, Redis"
    )
    rows = []
    for key, name in (
        ("b", "priority_new_ticket_latency_slices_fifo"),
        ("c", "priority_new_ticket_latency_shipped"),
    ):
        value, baseline = median(key), median("a")
        rows.append(
            {
                "name": name,
                "value": round(value, 1),
                "baseline": round(baseline, 1),
                "ratio": round(baseline / value, 2),
                "unit": "ms",
                "note": (
                    f"median new ticket created -> predictions stored, {CONFIGS[key][0]} "
                    f"(slices of {SLICE}; range {spread(key)}) vs {CONFIGS['a'][0]} (range "
                    f"{spread('a')}); ratio baseline/value, higher is better; {setup}"
                ),
            }
        )
    value, baseline = results["c"]["bulk_rate"], results["a"]["bulk_rate"]
    rows.append(
        {
            "name": "priority_bulk_throughput",
            "value": round(value, 1),
            "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3),
            "unit": "tickets/s",
            "note": (
                f"tickets the bulk tasks classified per second, first publish -> last SUCCESS, "
                f"{CONFIGS['c'][0]} (slices of {SLICE}) vs {CONFIGS['a'][0]}; slices, FIFO: "
                f"{results['b']['bulk_rate']:.1f}; the cost of slicing in wall time, one run "
                f"each (a shared machine's load moves it); {setup}"
            ),
        }
    )

    def per_cpu_second(key: str) -> float:
        return float(results[key]["bulk_tickets"]) / results[key]["cpu"]

    value, baseline = per_cpu_second("c"), per_cpu_second("a")
    rows.append(
        {
            "name": "priority_bulk_tickets_per_worker_cpu_second",
            "value": round(value, 1),
            "baseline": round(baseline, 1),
            "ratio": round(value / baseline, 3),
            "unit": "tickets/cpu-s",
            "note": (
                f"bulk tickets per second of worker CPU (main + pool process, user + system; "
                f"the new tickets' tasks included), {CONFIGS['c'][0]} vs {CONFIGS['a'][0]}; "
                f"slices, FIFO: {per_cpu_second('b'):.1f}; the cost of slicing in the worker, "
                f"steadier than wall time under load (database time not included); {setup}"
            ),
        }
    )
    return rows


# ------------------------------------------------------------------------------
# The publisher: a process with the configuration's settings
# ------------------------------------------------------------------------------


def publish_and_measure(plan: dict[str, Any]) -> dict[str, Any]:
    """Queue the bulk work, create the new tickets while it runs, wait; latencies and rates."""
    import django

    django.setup()
    from django.db.models import Max
    from django.utils import timezone

    from mlmodels import selectors, services
    from mlmodels.models import Prediction
    from taskops.models import TaskRecord, TaskState
    from taskops.services import task_enqueue
    from tickets.models import Organization, Source, Ticket
    from tickets.services import ticket_create

    organization = Organization.objects.get(pk=plan["organization_id"])
    targets = len(selectors.model_versions_active(organization=organization))

    def batch(ticket_ids: list[int] | None = None) -> str:
        kwargs: dict[str, Any] = {"organization_id": organization.pk}
        if ticket_ids is not None:
            kwargs["ticket_ids"] = ticket_ids
        return task_enqueue(name=services.BATCH_CLASSIFY_TASK, kwargs=kwargs, triggered_by="bench")

    published = timezone.now()
    bulk = [batch()] + [batch(ids) for ids in plan["refresh"]]
    _wait(
        lambda: TaskRecord.objects.filter(
            task_id=bulk[0], state__in=(TaskState.STARTED, TaskState.PROGRESS)
        ).exists(),
        "the batch start",
    )
    time.sleep(FIRST_DELAY)
    new: list[int] = []
    for subject, body in plan["new"]:
        ticket, _ = ticket_create(
            organization=organization, source=Source.API, subject=subject, body=body
        )
        new.append(ticket.pk)
        time.sleep(GAP)

    def classified() -> bool:
        return Prediction.objects.filter(ticket_id__in=new).count() == targets * len(new)

    _wait(lambda: classified() and _records_done(bulk), "the bulk work and the new tickets")
    created = dict(Ticket.objects.filter(pk__in=new).values_list("id", "created_at"))
    stored = dict(
        Prediction.objects.filter(ticket_id__in=new)
        .values("ticket_id")
        .annotate(last=Max("created_at"))
        .values_list("ticket_id", "last")
    )
    records = list(TaskRecord.objects.filter(task_id__in=bulk))
    span = max(r.finished_at for r in records) - published
    tickets = sum(int(r.result["tickets"]) for r in records)
    batch_record = next(r for r in records if r.task_id == bulk[0])
    return {
        "latencies": [(stored[pk] - created[pk]).total_seconds() for pk in new],
        "bulk_rate": tickets / span.total_seconds(),
        "bulk_tickets": tickets,
        "batch_tickets": int(batch_record.result["tickets"]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publish", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        print(MARKER + json.dumps(publish_and_measure(json.loads(args.publish))), flush=True)
        return
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
