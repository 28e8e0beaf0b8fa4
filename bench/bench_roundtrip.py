"""Latency of one task through Redis: publish `taskops.tasks.noop`, see SUCCESS, vs bare Redis.

    python -m bench bench_roundtrip
    ZENITH_BENCH_ROUNDTRIPS=1000 python -m bench bench_roundtrip

One worker (scripts/start_celery_worker.py worker --worker-type general --concurrency 1)
runs against a throwaway database (PostgreSQL when DATABASE_URL says so, else SQLite) and the
Redis broker of CELERY_BROKER_URL. The publisher sends N no-op tasks one after the other and
waits for each result (AsyncResult.get: the worker's Redis notice, the row in PostgreSQL
through django-celery-results) before sending the next.
The baseline is the floor under that: a request LPUSHed to Redis, BRPOPed by an echo thread
on its own connection and LPUSHed back, BRPOPed by the sender. p50 and p99 of both.

`run()` returns rows {"name", "value", "baseline", "ratio", "unit", "note"} for `make bench`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import ROOT, database_url, setup_django, teardown_django, worker

RESULT_POLL = 0.002


def _roundtrips() -> int:
    return int(os.environ.get("ZENITH_BENCH_ROUNDTRIPS", "300"))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def _skipped(note: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "value": None,
            "baseline": None,
            "ratio": None,
            "unit": "ms",
            "note": note,
        }
        for name in ("task_roundtrip_p50", "task_roundtrip_p99")
    ]


def _bare_redis(url: str, count: int) -> list[float]:
    """Milliseconds of LPUSH -> echo thread BRPOP/LPUSH -> BRPOP round trips."""
    import redis

    tag = uuid.uuid4().hex[:8]
    request_key, reply_key = f"zenith-bench:{tag}:request", f"zenith-bench:{tag}:reply"

    def echo() -> None:
        connection = redis.Redis.from_url(url)
        for _ in range(count + 5):
            item = connection.brpop([request_key], timeout=30)
            if item is None:
                return
            connection.lpush(reply_key, item[1])

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    client = redis.Redis.from_url(url)
    timings: list[float] = []
    try:
        for i in range(count + 5):
            started = time.perf_counter()
            client.lpush(request_key, str(i))
            reply = client.brpop([reply_key], timeout=30)
            if reply is None:
                raise RuntimeError("the echo thread did not answer")
            if i >= 5:  # the first few warm connections up
                timings.append((time.perf_counter() - started) * 1000)
    finally:
        thread.join(timeout=30)
        client.delete(request_key, reply_key)
    return timings


def _task_roundtrips(count: int) -> list[float]:
    """Milliseconds from apply_async to a SUCCESS result seen by the publisher."""
    from taskops.tasks import noop

    timings: list[float] = []
    for i in range(count + 5):
        started = time.perf_counter()
        result = noop.apply_async()
        result.get(timeout=30, interval=RESULT_POLL)
        if result.status != "SUCCESS":
            raise RuntimeError(f"noop ended {result.status}")
        if i >= 5:
            timings.append((time.perf_counter() - started) * 1000)
    return timings


def run() -> list[dict[str, Any]]:
    """Measure and return the rows `make bench` collects."""
    count = _roundtrips()
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if not broker.startswith("redis://"):
        return _skipped("skipped: CELERY_BROKER_URL is not a Redis URL")
    if not _redis_reachable(broker):
        return _skipped(f"skipped: Redis at {broker} is not reachable")
    with tempfile.TemporaryDirectory(prefix="zenith-bench-roundtrip-") as name:
        tmp = Path(name)
        database = setup_django(tmp, name="roundtrip", keep_redis_broker=True)

        try:
            bare = _bare_redis(broker, count)
            with worker(
                log=tmp / "worker.log",
                env={"DATABASE_URL": database_url()},
                worker_type="general",
                name="bench-roundtrip",
            ):
                tasks = _task_roundtrips(count)
        finally:
            teardown_django(database)
    note = (
        "noop publish -> SUCCESS seen by the publisher (AsyncResult.get: Redis notice, result "
        "row in the database; 1 general worker, concurrency 1) vs bare Redis "
        f"LPUSH/BRPOP echo through a thread; {count} sequential round trips, {database}"
    )
    rows = []
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        value, baseline = _percentile(tasks, fraction), _percentile(bare, fraction)
        rows.append(
            {
                "name": f"task_roundtrip_{label}",
                "value": round(value, 3),
                "baseline": round(baseline, 3),
                "ratio": round(value / baseline, 1),
                "unit": "ms",
                "note": note,
            }
        )
    return rows


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(ROOT))
    print(json.dumps(run(), indent=2))
