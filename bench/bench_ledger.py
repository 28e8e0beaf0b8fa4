"""What the task ledger costs: no-op tasks per second through Redis, ledger on against off.

    python -m bench.bench_ledger            # prints a table and the rows as JSON
    ZENITH_BENCH_TASKS=3000 ZENITH_BENCH_ROUNDS=5 python -m bench.bench_ledger

Each round starts a real worker (bench.common.worker: prefork, 2 processes, on a queue of
the bench's own) with ZENITH_TASK_LEDGER=1 or 0, then a publisher process sends N no-op
tasks (`taskops.tasks.noop`) and waits until the result backend holds all N results. Rounds
alternate ledger on/off so drift on the machine hits both; the best round of each counts.
Everything runs against a throwaway database next to the configured one (PostgreSQL when
DATABASE_URL says so, else SQLite) and the Redis at ZENITH_BENCH_REDIS_URL, CELERY_BROKER_URL
(when Redis) or REDIS_URL, else redis://127.0.0.1:6379/15; only the bench's queue is touched.

`run()` returns rows {"name", "value", "baseline", "ratio", "unit", "note"} for `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchDatabase, production_env, run_json, worker

TASK = "taskops.tasks.noop"
DRAIN_TIMEOUT = 600.0


def _redis_url() -> str:
    for name in ("ZENITH_BENCH_REDIS_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        value = os.environ.get(name, "")
        if value.startswith("redis://"):
            return value
    return "redis://127.0.0.1:6379/15"


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _publish_round(env: dict[str, str], tasks: int, queue: str) -> dict[str, float]:
    args = ["bench.bench_ledger", "--publish", str(tasks), "--queue", queue]
    result: dict[str, float] = run_json(args, env=env, timeout=DRAIN_TIMEOUT + 60)
    return result


def publish_and_wait(tasks: int, queue: str) -> dict[str, float]:
    """In a configured Django process: send `tasks` no-ops, wait for all results; timings."""
    import django

    django.setup()
    from django_celery_results.models import TaskResult

    from taskops.models import TaskRecord
    from taskops.tasks import noop

    TaskResult.objects.all().delete()
    TaskRecord.objects.all().delete()
    started = time.perf_counter()
    for _ in range(tasks):
        noop.apply_async(queue=queue)
    published = time.perf_counter()
    deadline = started + DRAIN_TIMEOUT
    while TaskResult.objects.filter(status="SUCCESS").count() < tasks:
        if time.perf_counter() > deadline:
            raise RuntimeError("the worker did not finish the bench tasks in time")
        time.sleep(0.05)
    finished = time.perf_counter()
    return {
        "tasks_per_second": tasks / (finished - started),
        "published_per_second": tasks / (published - started),
        "ledger_rows": TaskRecord.objects.filter(state="SUCCESS").count(),
    }


def run() -> list[dict[str, Any]]:
    """Measure and return the rows `make bench` collects."""
    tasks = int(os.environ.get("ZENITH_BENCH_TASKS", "1500"))
    rounds = int(os.environ.get("ZENITH_BENCH_ROUNDS", "3"))
    redis_url = _redis_url()
    if not _redis_reachable(redis_url):
        note = f"skipped: Redis at {redis_url} is not reachable"
        return [
            {
                "name": "ledger_noop_throughput",
                "value": None,
                "baseline": None,
                "ratio": None,
                "unit": "tasks/s",
                "note": note,
            }
        ]
    database = BenchDatabase()
    base_env = {
        **os.environ,
        # Production settings: no debug cursor recording every query.
        **production_env(),
        "DATABASE_URL": database.url,
        "CELERY_BROKER_URL": redis_url,
        "REDIS_URL": redis_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    results: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    # A queue of its own: nothing else consumes the bench's tasks or is flushed with them.
    queue = f"bench-ledger-{os.getpid()}"
    database.create(base_env)
    try:
        with tempfile.TemporaryDirectory() as logs:
            for number in range(rounds):
                for mode in ("off", "on") if number % 2 == 0 else ("on", "off"):
                    env = {**base_env, "ZENITH_TASK_LEDGER": "1" if mode == "on" else "0"}
                    _flush_queue(redis_url, queue)
                    with worker(
                        log=Path(logs) / f"worker-{number}-{mode}.log",
                        env=env,
                        queues=[queue],
                        concurrency=2,
                    ):
                        results[mode].append(_publish_round(env, tasks, queue))
    finally:
        _flush_queue(redis_url, queue)
        database.drop()

    def best(mode: str, key: str) -> float:
        return max(result[key] for result in results[mode])

    on, off = best("on", "tasks_per_second"), best("off", "tasks_per_second")
    publish_on, publish_off = (
        best("on", "published_per_second"),
        best("off", "published_per_second"),
    )
    backend = "PostgreSQL" if database.postgres else "SQLite"
    ledger_rows = min(result["ledger_rows"] for result in results["on"])
    setup = f"{tasks} no-op tasks x {rounds} rounds, 1 worker x 2 processes, Redis, {backend}"
    return [
        {
            "name": "ledger_noop_throughput",
            "value": round(on, 1),
            "baseline": round(off, 1),
            "ratio": round(on / off, 3),
            "unit": "tasks/s",
            "note": f"publish to result, ledger on vs off, best round; {setup}; "
            f"ledger rows in SUCCESS per round: {ledger_rows}",
        },
        {
            "name": "ledger_publish_rate",
            "value": round(publish_on, 1),
            "baseline": round(publish_off, 1),
            "ratio": round(publish_on / publish_off, 3),
            "unit": "publishes/s",
            "note": "publish calls per second in the same rounds, the worker running alongside "
            f"(one INSERT per publish with the ledger on); {setup}",
        },
        {
            "name": "ledger_overhead",
            "value": round((1 - on / off) * 100, 1),
            "baseline": 20.0,
            "ratio": round((1 - on / off) * 100 / 20.0, 3),
            "unit": "%",
            "note": "throughput lost to the ledger; the budget is under 20 %",
        },
    ]


def _flush_queue(redis_url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{queue}*"))
    if keys:
        client.delete(*keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publish", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--queue", default="bench-ledger", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.publish:
        print(json.dumps(publish_and_wait(args.publish, args.queue)))
        return
    rows = run()
    for row in rows:
        value, baseline = row["value"], row["baseline"]
        print(f"{row['name']:<24} {value!s:>9} vs {baseline!s:>9} {row['unit']:<12} {row['ratio']}")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
