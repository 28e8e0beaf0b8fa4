"""Zenith's task path against the real floor: a bare, Django-free Celery app in the same run.

    python -m bench bench_floor
    ZENITH_BENCH_FLOOR_TASKS=3000 ZENITH_BENCH_FLOOR_ROUNDS=5 python -m bench.bench_floor
    python -m bench.bench_floor --profile 5000      # cProfile of both workers per task

The floor is bench/floor_app.py: Celery with a Redis broker and a Redis result backend,
prefork, 2 processes, late acks, prefetch 1, a no-op task. Zenith's path is the same worker
command (`celery -A zenith worker --pool prefork --concurrency 2`, prefetch 1) running
`taskops.tasks.noop` published through `taskops.services.task_enqueue`, with the task ledger
on (a row from publish, STARTED and SUCCESS) and results persisted in PostgreSQL through
django-celery-results. Both use the same Redis (ZENITH_FLOOR_REDIS_URL, else the broker) on
queues of the bench's own. Each round runs both workers one after the other, alternating
which goes first, so drift on a shared machine hits both; the best round of each counts.

- round trip: publish one no-op, wait for its result (AsyncResult.get), the next; p50/p99.
- throughput: a publisher process sends N no-ops as fast as it can while the worker runs;
  N / (first publish -> all N results stored).

`run()` returns rows {"name", "value", "baseline", "ratio", "unit", "note"} for `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchDatabase, production_env, run_json, worker

ZENITH_TASK = "taskops.tasks.noop"
DRAIN_TIMEOUT = 600.0
WARMUP = 20
# Interval of AsyncResult.get for a backend that polls (the django-db one did).
RESULT_POLL = 0.002
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _zenith_redis_url() -> str:
    for name in ("ZENITH_BENCH_REDIS_URL", "CELERY_BROKER_URL", "REDIS_URL"):
        value = os.environ.get(name, "")
        if value.startswith("redis://"):
            return value
    return "redis://127.0.0.1:6379/15"


def _floor_redis_url() -> str:
    return os.environ.get("ZENITH_FLOOR_REDIS_URL") or _zenith_redis_url()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# ------------------------------------------------------------------------------
# Publishers (each in a process of its own: the floor's never imports Django)
# ------------------------------------------------------------------------------
def _floor_publish(mode: str, count: int, queue: str) -> dict[str, Any]:
    import redis

    from bench.floor_app import app, noop

    if mode == "roundtrip":
        timings = []
        for i in range(count + WARMUP):
            started = time.perf_counter()
            noop.apply_async(queue=queue).get(timeout=30)
            if i >= WARMUP:
                timings.append((time.perf_counter() - started) * 1000)
        return {"timings": timings}
    client = redis.Redis.from_url(app.conf.broker_url)
    cpu = CpuMeter(queue=queue, database=None)
    started = time.perf_counter()
    ids = [noop.apply_async(queue=queue).id for _ in range(count)]
    published = time.perf_counter()
    noop.AsyncResult(ids[-1]).get(timeout=DRAIN_TIMEOUT)
    keys = [f"celery-task-meta-{task_id}" for task_id in ids]
    _wait_until(
        lambda: sum(client.exists(*keys[i : i + 1000]) for i in range(0, count, 1000)), count
    )
    finished = time.perf_counter()
    return {
        "seconds": finished - started,
        "publish_seconds": published - started,
        "cpu": cpu.spent(),
    }


def _zenith_publish(mode: str, count: int, queue: str) -> dict[str, Any]:
    import django

    django.setup()
    from celery.result import AsyncResult
    from django_celery_results.models import TaskResult

    from taskops.models import TaskRecord
    from taskops.services import task_enqueue

    def enqueue() -> str:
        return task_enqueue(name=ZENITH_TASK, kwargs={}, queue=queue)

    if mode == "roundtrip":
        timings = []
        for i in range(count + WARMUP):
            started = time.perf_counter()
            result: Any = AsyncResult(enqueue())
            result.get(timeout=30, interval=RESULT_POLL)
            if result.status != "SUCCESS":
                raise RuntimeError(f"noop ended {result.status}")
            if i >= WARMUP:
                timings.append((time.perf_counter() - started) * 1000)
        return {"timings": timings}
    TaskResult.objects.all().delete()
    TaskRecord.objects.all().delete()
    from django.db import connection

    cpu = CpuMeter(queue=queue, database=connection.settings_dict["NAME"])
    started = time.perf_counter()
    ids = [enqueue() for _ in range(count)]
    published = time.perf_counter()
    AsyncResult(ids[-1]).get(timeout=DRAIN_TIMEOUT, interval=RESULT_POLL)
    _wait_until(lambda: TaskResult.objects.filter(status="SUCCESS").count(), count)
    finished = time.perf_counter()
    spent = cpu.spent()
    return {
        "seconds": finished - started,
        "publish_seconds": published - started,
        "ledger_rows": TaskRecord.objects.filter(state="SUCCESS").count(),
        "cpu": spent,
    }


def _wait_until(done: Any, count: int) -> None:
    """Until `done()` reaches `count` (checked every 50 ms: the waiter stays out of the way)."""
    deadline = time.perf_counter() + DRAIN_TIMEOUT
    while done() < count:
        if time.perf_counter() > deadline:
            raise RuntimeError("the worker did not finish in time")
        time.sleep(0.05)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds spent from now on by the worker serving `queue` (its main process and
    pool children), the PostgreSQL backends of `database`, and this publisher.

    Throughput on a busy shared machine says how much CPU each path got; CPU per task says
    what each path costs, which is what a quiet machine's throughput follows. Redis's own
    CPU is left out (a shared server; both paths use it for the broker and results).
    """

    def __init__(self, *, queue: str, database: str | None) -> None:
        self.queue, self.database = queue, database
        self.start = self._snapshot()
        self.own = time.process_time()

    def _pids(self) -> dict[str, list[int]]:
        workers = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    cmdline = handle.read()
            except OSError:
                continue
            if b"worker" in cmdline and self.queue.encode() in cmdline:
                workers.append(int(entry))
        backends = []
        if self.database:
            from django.db import connection

            with connection.cursor() as cursor:
                sql = "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                cursor.execute(sql, [self.database])
                backends = [row[0] for row in cursor.fetchall()]
        return {"worker": workers, "postgresql": backends}

    def _snapshot(self) -> dict[str, dict[int, float]]:
        return {
            kind: {pid: _cpu_seconds(pid) for pid in pids} for kind, pids in self._pids().items()
        }

    def spent(self) -> dict[str, float]:
        """CPU seconds since the meter started: worker, postgresql, publisher."""
        end = self._snapshot()
        spent = {
            kind: sum(cpu - self.start[kind].get(pid, 0.0) for pid, cpu in pids.items())
            for kind, pids in end.items()
        }
        spent["publisher"] = time.process_time() - self.own
        return spent


def _publish(env: dict[str, str], path: str, mode: str, count: int, queue: str) -> dict[str, Any]:
    args = ["bench.bench_floor", "--publish", path, "--mode", mode, "--count", str(count)]
    result: dict[str, Any] = run_json(
        [*args, "--queue", queue], env=env, timeout=DRAIN_TIMEOUT + 60
    )
    return result


# ------------------------------------------------------------------------------
# Rounds
# ------------------------------------------------------------------------------
def _flush(redis_url: str, queue: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{queue}*"))
    if keys:
        client.delete(*keys)


def _environments(database: BenchDatabase) -> dict[str, dict[str, str]]:
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    zenith_redis = _zenith_redis_url()
    zenith = {
        **os.environ,
        **production_env(),
        "DATABASE_URL": database.url,
        "CELERY_BROKER_URL": zenith_redis,
        "REDIS_URL": zenith_redis,
        "ZENITH_TASK_LEDGER": "1",
        "PYTHONPATH": pythonpath,
    }
    floor = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "CELERY_"))
    }
    # Celery lets these two variables override an app's own configuration: set, not unset,
    # since bench.common.worker lays the environment over this process's.
    floor_redis = _floor_redis_url()
    floor.update(
        {
            "ZENITH_FLOOR_REDIS_URL": floor_redis,
            "CELERY_BROKER_URL": floor_redis,
            "CELERY_RESULT_BACKEND": floor_redis,
            "PYTHONPATH": pythonpath,
        }
    )
    return {"floor": floor, "zenith": zenith}


def _round(
    path: str, env: dict[str, str], logs: Path, number: int, tasks: int, trips: int
) -> dict[str, Any]:
    queue = f"bench-floor-{path}-{uuid.uuid4().hex[:6]}"
    redis_url = env["ZENITH_FLOOR_REDIS_URL"] if path == "floor" else env["CELERY_BROKER_URL"]
    options = {"app": "bench.floor_app"} if path == "floor" else {}
    try:
        with worker(
            log=logs / f"{path}-{number}.log",
            env=env,
            queues=[queue],
            concurrency=2,
            name=f"bench-{path}",
            **options,
        ):
            roundtrip = _publish(env, path, "roundtrip", trips, queue)
            throughput = _publish(env, path, "throughput", tasks, queue)
    finally:
        _flush(redis_url, queue)
    return {
        "p50": _percentile(roundtrip["timings"], 0.5),
        "p99": _percentile(roundtrip["timings"], 0.99),
        "tasks_per_second": tasks / throughput["seconds"],
        "published_per_second": tasks / throughput["publish_seconds"],
        "ledger_rows": throughput.get("ledger_rows"),
        "cpu_ms_per_task": 1000 * sum(throughput["cpu"].values()) / tasks,
        "cpu_parts": {kind: 1000 * cpu / tasks for kind, cpu in throughput["cpu"].items()},
    }


def run() -> list[dict[str, Any]]:
    """Measure and return the rows `make bench` collects."""
    tasks = int(os.environ.get("ZENITH_BENCH_FLOOR_TASKS", "2000"))
    trips = int(os.environ.get("ZENITH_BENCH_FLOOR_ROUNDTRIPS", "300"))
    rounds = int(os.environ.get("ZENITH_BENCH_FLOOR_ROUNDS", "3"))
    names = ("floor_noop_throughput", "floor_roundtrip_p50", "floor_roundtrip_p99")
    import redis

    for url in {_zenith_redis_url(), _floor_redis_url()}:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        except redis.RedisError:
            note = f"skipped: Redis at {url} is not reachable"
            return [{"name": name, "value": None, "note": note} for name in names]
    database = BenchDatabase("floor")
    envs = _environments(database)
    results: dict[str, list[dict[str, Any]]] = {"floor": [], "zenith": []}
    database.create(envs["zenith"])
    try:
        with tempfile.TemporaryDirectory(prefix="zenith-bench-floor-") as logs:
            for number in range(rounds):
                order = ("floor", "zenith") if number % 2 == 0 else ("zenith", "floor")
                for path in order:
                    results[path].append(_round(path, envs[path], Path(logs), number, tasks, trips))
    finally:
        database.drop()
    return _rows(results, tasks=tasks, trips=trips, rounds=rounds, database=database)


def _rows(
    results: dict[str, list[dict[str, Any]]],
    *,
    tasks: int,
    trips: int,
    rounds: int,
    database: BenchDatabase,
) -> list[dict[str, Any]]:
    def spread(path: str, key: str) -> str:
        values = [r[key] for r in results[path]]
        return f"{min(values):.4g}-{max(values):.4g}"

    backend = "PostgreSQL" if database.postgres else "SQLite"
    zenith_setup = (
        f"Zenith: {ZENITH_TASK} via task_enqueue, ledger on, django-celery-results in {backend}"
    )
    floor_setup = "floor: bench/floor_app.py (bare Celery, Redis broker + Redis results)"
    common = (
        "both prefork x 2, acks late, prefetch 1, same Redis; best of "
        f"{rounds} alternating rounds (shared 2-core machine: noisy)"
    )
    rows = []
    z_tp = max(r["tasks_per_second"] for r in results["zenith"])
    f_tp = max(r["tasks_per_second"] for r in results["floor"])
    ledger_rows = min(r["ledger_rows"] or 0 for r in results["zenith"])
    rows.append(
        {
            "name": "floor_noop_throughput",
            "value": round(z_tp, 1),
            "baseline": round(f_tp, 1),
            "ratio": round(z_tp / f_tp, 3),
            "unit": "tasks/s",
            "note": f"{tasks} no-ops, publish -> all results stored, publisher running "
            f"alongside; {zenith_setup} (ledger rows SUCCESS per round: {ledger_rows}) vs "
            f"{floor_setup}; {common}; rounds Zenith {spread('zenith', 'tasks_per_second')}, "
            f"floor {spread('floor', 'tasks_per_second')}; aim >= 0.6x",
        }
    )
    for label, aim in (("p50", "aim <= 2.5x"), ("p99", "")):
        value = min(r[label] for r in results["zenith"])
        baseline = min(r[label] for r in results["floor"])
        rows.append(
            {
                "name": f"floor_roundtrip_{label}",
                "value": round(value, 3),
                "baseline": round(baseline, 3),
                "ratio": round(value / baseline, 2),
                "unit": "ms",
                "note": f"{trips} sequential round trips, publish -> result seen by the "
                f"publisher (AsyncResult.get); {zenith_setup} vs {floor_setup}; {common}; "
                f"rounds Zenith {spread('zenith', label)}, floor {spread('floor', label)}"
                + (f"; {aim}" if aim else ""),
            }
        )
    z_best = min(results["zenith"], key=lambda r: r["cpu_ms_per_task"])
    f_best = min(results["floor"], key=lambda r: r["cpu_ms_per_task"])
    z_cpu, f_cpu = z_best["cpu_ms_per_task"], f_best["cpu_ms_per_task"]

    def parts(best: dict[str, Any]) -> str:
        return ", ".join(f"{kind} {ms:.2f}" for kind, ms in best["cpu_parts"].items() if ms)

    rows.append(
        {
            "name": "floor_noop_cpu_per_task",
            "value": round(z_cpu, 3),
            "baseline": round(f_cpu, 3),
            "ratio": round(z_cpu / f_cpu, 2),
            "unit": "CPU ms/task",
            "note": "CPU (user + system) per task in the throughput rounds: the worker's "
            "processes, the publisher, and (Zenith) the PostgreSQL backends of its database; "
            "Redis left out; least of the rounds. On a CPU-bound quiet machine throughput "
            f"follows 1/CPU: the throughput ratio to expect there is {f_cpu / z_cpu:.2f}x; "
            f"rounds Zenith {spread('zenith', 'cpu_ms_per_task')}, "
            f"floor {spread('floor', 'cpu_ms_per_task')}; ms per task: Zenith {parts(z_best)}; "
            f"floor {parts(f_best)}",
        }
    )
    z_pub = statistics.median(r["published_per_second"] for r in results["zenith"])
    f_pub = statistics.median(r["published_per_second"] for r in results["floor"])
    rows.append(
        {
            "name": "floor_publish_rate",
            "value": round(z_pub, 1),
            "baseline": round(f_pub, 1),
            "ratio": round(z_pub / f_pub, 3),
            "unit": "publishes/s",
            "note": "publish calls per second in the throughput rounds (median), the worker "
            "running alongside: task_enqueue with its ledger INSERT vs apply_async",
        }
    )
    return rows


# ------------------------------------------------------------------------------
# Profile: cProfile of one worker process (solo pool) over N no-ops
# ------------------------------------------------------------------------------
def profile(count: int, out: Path) -> None:
    """Run each path's worker in the solo pool under cProfile over `count` no-ops; top frames."""
    import pstats

    database = BenchDatabase("floor")
    envs = _environments(database)
    database.create(envs["zenith"])
    out.mkdir(parents=True, exist_ok=True)
    try:
        for path in ("floor", "zenith"):
            env = envs[path]
            queue = f"bench-floor-profile-{uuid.uuid4().hex[:6]}"
            app = "bench.floor_app" if path == "floor" else "zenith"
            stats_file = out / f"{path}.pstats"
            hostname = f"profile-{path}-{uuid.uuid4().hex[:6]}@localhost"
            command = [
                *(sys.executable, "-m", "cProfile", "-o", str(stats_file)),
                *("-m", "celery", "-A", app, "worker", "--pool", "solo", "--queues", queue),
                *("--hostname", hostname, "--loglevel", "WARNING", "--without-heartbeat"),
                *("--without-mingle", "--without-gossip"),
            ]
            # Fill the queue first, then let the worker drain it: the profile is the
            # worker's alone.
            redis_url = env["ZENITH_FLOOR_REDIS_URL"] if path == "floor" else env["REDIS_URL"]
            stored = _results_counter(path, redis_url, database)
            target = stored() + count
            _publish_only(env, path, count, queue)
            proc = subprocess.Popen(command, cwd=ROOT, env=env)
            _wait_drained(stored, target)
            started = time.monotonic()
            proc.terminate()
            proc.wait(timeout=60)
            print(f"{path}: drained; stopped in {time.monotonic() - started:.1f}s", flush=True)
            with (out / f"{path}.txt").open("w") as handle:
                handle.write(f"{path}: {count} no-ops drained by one solo-pool worker\n")
                stats = pstats.Stats(str(stats_file), stream=handle)
                stats.sort_stats("cumulative").print_stats(45)
                stats.sort_stats("tottime").print_stats(30)
            _flush(redis_url, queue)
    finally:
        database.drop()


def _publish_only(env: dict[str, str], path: str, count: int, queue: str) -> None:
    command = [sys.executable, "-m", "bench.bench_floor", "--publish", path, "--mode", "fill"]
    subprocess.run(
        [*command, "--count", str(count), "--queue", queue],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _results_counter(path: str, redis_url: str, database: BenchDatabase) -> Any:
    """A function that counts the stored successful results of `path`."""
    import redis

    client = redis.Redis.from_url(redis_url)

    def stored() -> int:
        if path == "floor":
            return sum(1 for _ in client.scan_iter("celery-task-meta-*", count=1000))
        import psycopg

        with psycopg.connect(database.url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM django_celery_results_taskresult WHERE status = 'SUCCESS'"
            ).fetchone()
        return row[0] if row else 0

    return stored


def _wait_drained(stored: Any, target: int) -> None:
    """Until the profiled worker has stored `target` results (its queue is its own)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while stored() < target:
        if time.monotonic() > deadline:
            raise RuntimeError("the profiled worker did not drain its queue")
        time.sleep(0.5)


def _fill(path: str, count: int, queue: str) -> dict[str, Any]:
    if path == "floor":
        from bench.floor_app import noop

        for _ in range(count):
            noop.apply_async(queue=queue)
    else:
        import django

        django.setup()
        from taskops.services import task_enqueue

        for _ in range(count):
            task_enqueue(name=ZENITH_TASK, kwargs={}, queue=queue)
    return {"published": count}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publish", choices=["floor", "zenith"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["roundtrip", "throughput", "fill"])
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--queue", default="bench-floor")
    parser.add_argument("--profile", type=int, metavar="N", help="cProfile both workers")
    parser.add_argument("--profile-dir", default=str(ROOT / "var" / "profile"))
    args = parser.parse_args(argv)
    if args.publish:
        if args.mode == "fill":
            result = _fill(args.publish, args.count, args.queue)
        else:
            publish = _floor_publish if args.publish == "floor" else _zenith_publish
            result = publish(args.mode, args.count, args.queue)
        print(json.dumps(result))
        return
    if args.profile:
        profile(args.profile, Path(args.profile_dir))
        return
    print(json.dumps(run(), indent=2))


if __name__ == "__main__":
    main()
