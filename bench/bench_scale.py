"""Costs that stay flat as data grows: the same requests at 10k, 100k and 1M tickets.

    python -m bench bench_scale
    ZENITH_BENCH_SCALE_SIZES=10000,100000 ZENITH_BENCH_SCALE_REPEATS=15 python -m bench bench_scale

A throwaway PostgreSQL database (BenchDatabase, migrated: the schema as shipped) is filled
server-side with `INSERT ... SELECT generate_series` (no ORM): two organizations sharing the
rows half and half, tickets with two predictions each (category and priority, from each
organization's two active model versions; 5 % flagged for review, below the threshold), and
as many task-ledger rows as tickets; a person relabelled 1 % of the tickets (the
feedback /metrics' live accuracy reads). The steps are cumulative: fill to the first size,
measure, grow to the next, measure.

The data grows as history does: ticket i was created i * 30 s ago and ledger row i was
queued i * 9 s ago, so the last hour and the last day hold the same rows at every size
(windows a steady ingest rate fills), and only the history behind them grows. Ids fall as
rows get older, as they would have been assigned. Besides the live ledger, each step adds
a backlog of expired ledger rows (a tenth of the step's size, older than the retention)
that the hourly cleanup deletes: its time and peak RSS are measured in a child process.

Requests go to a gunicorn (1 sync worker, DEBUG off, throttles off) one at a time, as a
member (admin role) of the first organization or, for the staff-only endpoints, as a
superuser / the metrics bearer token. No Celery worker runs: `tasks/health` and
`tasks/active` each wait the 1 s broadcast timeout for worker replies, a constant.

Rows: per request, value = p50 at the largest size, baseline = p50 at the smallest, ratio
(aim <= 2); the note has p95 and the middle size. For every request over 50 ms at the
largest size, the EXPLAIN (ANALYZE, BUFFERS) of its two slowest SQL statements is written
to bench/results/explain_scale.md (or ZENITH_BENCH_SCALE_EXPLAIN). The cleanup rows are its
cost per 1,000 rows deleted and its process's peak RSS (flat: batches, no rows held).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchDatabase, production_env

SIZES = (10_000, 100_000, 1_000_000)
REPEATS = 30
# Requests that wait for worker replies (1 s each): fewer repeats.
SLOW_REPEATS = 7
WARMUP = 3
# Ids fall as rows get older: row i (0 = newest) gets ID_BASE - i; expired rows below.
ID_BASE = 10_000_000
EXPIRED_ID_BASE = 5_000_000
TICKET_STEP_SECONDS = 30
LEDGER_STEP_SECONDS = 9
RETENTION_DAYS = 365
FILL_CHUNK = 250_000
METRICS_TOKEN = "bench-scale-metrics-token"  # noqa: S105 (a throwaway server's)
SLOW_MS = 50.0
READY_TIMEOUT = 90.0

TASK_NAMES = (
    "mlmodels.tasks.classify_ticket_task",
    "mlmodels.tasks.classify_ticket_task",
    "mlmodels.tasks.classify_ticket_task",
    "integrations.tasks.sync_slack_tickets",
    "integrations.tasks.process_email_tickets",
    "mlmodels.tasks.batch_classify_tickets_task",
    "taskops.tasks.health_check_tasks",
    "taskops.tasks.cleanup_old_task_results",
)


def _sizes() -> list[int]:
    raw = os.environ.get("ZENITH_BENCH_SCALE_SIZES", "")
    sizes = [int(part) for part in raw.split(",") if part.strip()] or list(SIZES)
    return sorted(sizes)


def _repeats() -> int:
    return int(os.environ.get("ZENITH_BENCH_SCALE_REPEATS", str(REPEATS)))


# ------------------------------------------------------------------------------
# Filling the database
# ------------------------------------------------------------------------------
def _seed(conn: Any) -> dict[str, Any]:
    """Two organizations, their active model versions, a member and a superuser with tokens."""
    orgs = []
    for slug in ("acme", "globex"):
        row = conn.execute(
            "INSERT INTO tickets_organization (slug, name, confidence_threshold, created_at) "
            "VALUES (%s, %s, 0.6, now()) RETURNING id",
            (slug, slug.title()),
        ).fetchone()
        orgs.append(row[0])
    versions: dict[tuple[int, str], int] = {}
    for org in orgs:
        for target in ("category", "priority"):
            row = conn.execute(
                "INSERT INTO mlmodels_modelversion (organization_id, target, version, status, "
                "params, metrics, selection, comparison, labels, label_counts, "
                "training_set_size, n_train, n_test, n_shipped, test_ticket_ids, "
                "label_watermark, library_versions, artifact, artifact_sha256, artifact_size, "
                "trained_by_task_id, triggered_by, activated_by, error, created_at) VALUES "
                "(%s, %s, 1, 'active', '{}', '{}', '{}', '{}', '[]', '{}', 0, 0, 0, 0, '[]', "
                "'{}', '{}', '', '', 0, '', '', '', '', now()) RETURNING id",
                (org, target),
            ).fetchone()
            versions[(org, target)] = row[0]
    tokens, person = {}, 0
    for username, superuser in (("member", False), ("ops", True)):
        user_id = conn.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, "
            "email, is_staff, is_active, date_joined) VALUES ('!', %s, %s, '', '', '', %s, "
            "true, now()) RETURNING id",
            (superuser, username, superuser),
        ).fetchone()[0]
        key = (username * 40)[:40]
        conn.execute(
            "INSERT INTO authtoken_token (key, user_id, created) VALUES (%s, %s, now())",
            (key, user_id),
        )
        tokens[username] = key
        if not superuser:
            person = user_id
            conn.execute(
                "INSERT INTO tickets_membership (user_id, organization_id, role, created_at) "
                "VALUES (%s, %s, 'admin', now())",
                (user_id, orgs[0]),
            )
    return {"orgs": orgs, "versions": versions, "tokens": tokens, "person": person}


def _fill_tickets(conn: Any, seed: dict[str, Any], lo: int, hi: int) -> None:
    a, b = seed["orgs"]
    versions = seed["versions"]
    params = {
        "base": ID_BASE,
        "a": a,
        "b": b,
        "lo": lo,
        "hi": hi - 1,
        "step": TICKET_STEP_SECONDS,
    }
    conn.execute(
        """
        INSERT INTO tickets_ticket (id, organization_id, source, external_id, subject, body,
            requester, status, category, category_source, priority, priority_source,
            needs_review, review_margin, created_at, updated_at)
        SELECT %(base)s - i,
               CASE WHEN i %% 2 = 0 THEN %(a)s ELSE %(b)s END,
               (ARRAY['email', 'slack', 'api', 'import'])[1 + i %% 4],
               'bench-' || i,
               'printer on floor ' || (i %% 40) || ' does not print ' || left(md5(i::text), 8),
               'the office printer shows an error and nothing comes out; ticket '
                   || md5(i::text) || ' asks for help with the queue and the toner',
               'user' || (i %% 1000) || '@example.com',
               (ARRAY['new', 'open', 'open', 'pending', 'resolved', 'resolved', 'resolved',
                      'closed', 'closed', 'closed'])[1 + abs(hashtext(i || 's')) %% 10],
               'cat-' || abs(hashtext(i || 'c')) %% 10, 'model',
               'p' || abs(hashtext(i || 'p')) %% 4, 'model',
               abs(hashtext(i || 'r')) %% 20 = 0,
               -- what the classification stores: the unsure category prediction's margin
               CASE WHEN abs(hashtext(i || 'r')) %% 20 = 0
                    THEN (0.35 + (abs(hashtext(i || 'm')) %% 250) / 1000.0) * 0.8 - 0.3 END,
               now() - make_interval(secs => i * %(step)s),
               now() - make_interval(secs => i * %(step)s)
        FROM generate_series(%(lo)s::int, %(hi)s::int) AS i
        """,
        params,
    )
    # A person relabelled 1 % of the tickets' category an hour after they came in.
    conn.execute(
        """
        INSERT INTO tickets_labelchange (ticket_id, field, previous_value, new_value,
            changed_by_id, changed_at)
        SELECT %(base)s - i, 'category', 'cat-' || abs(hashtext(i || 'c')) %% 10, 'cat-1',
               %(person)s, now() - make_interval(secs => i * %(step)s) + interval '1 hour'
        FROM generate_series(%(lo)s::int, %(hi)s::int) AS i
        WHERE i %% 100 = 7
        """,
        {**params, "person": seed["person"]},
    )
    # Two predictions per ticket; a flagged ticket's category prediction is the unsure one.
    for n, target in enumerate(("category", "priority")):
        conn.execute(
            f"""
            INSERT INTO mlmodels_prediction (id, ticket_id, target, model_version_id, label,
                confidence, margin, top_terms, applied, created_at)
            SELECT (%(base)s - i) * 2 + {n}, %(base)s - i, '{target}',
                   CASE WHEN i %% 2 = 0 THEN %(va)s ELSE %(vb)s END,
                   'x',
                   c, c * 0.8 - 0.3, '[]', true,
                   now() - make_interval(secs => i * %(step)s)
            FROM (
                SELECT i, CASE WHEN {n} = 0 AND abs(hashtext(i || 'r')) %% 20 = 0
                               THEN 0.35 + (abs(hashtext(i || 'm')) %% 250) / 1000.0
                               ELSE 0.6 + (abs(hashtext(i || 'm{n}')) %% 400) / 1000.0 END AS c
                FROM generate_series(%(lo)s::int, %(hi)s::int) AS i
            ) AS rows
            """,  # noqa: S608 (this module's constants, no input)
            {**params, "va": versions[(a, target)], "vb": versions[(b, target)]},
        )


def _fill_ledger(conn: Any, seed: dict[str, Any], lo: int, hi: int, *, expired: bool) -> None:
    a, b = seed["orgs"]
    names = "(ARRAY[" + ", ".join(f"'{name}'" for name in TASK_NAMES) + "])"
    # The newest 20 rows are still queued, running or waiting to retry; the rest finished.
    conn.execute(
        f"""
        INSERT INTO taskops_taskrecord (id, task_id, name, queue, organization_id, args, kwargs,
            state, error, traceback, retries, attempts, retry_of, triggered_by, revoked_by,
            worker, queued_at, started_at, finished_at, runtime, updated_at)
        SELECT %(base)s - i, %(prefix)s || i, n, q, o, '[]',
               CASE WHEN o IS NULL THEN '{{}}'::jsonb
                    ELSE jsonb_build_object('organization_id', o) END,
               s, CASE WHEN s = 'FAILURE' THEN 'ConnectionError: the API did not answer'
                       ELSE '' END,
               '', 0, '[]', '', 'system', '', 'bench@localhost',
               qa,
               CASE WHEN s IN ('PENDING', 'RETRY') THEN NULL ELSE qa + interval '50 ms' END,
               CASE WHEN s IN ('PENDING', 'RETRY', 'STARTED') THEN NULL
                    ELSE qa + interval '50 ms' + make_interval(secs => rt) END,
               CASE WHEN s IN ('PENDING', 'RETRY', 'STARTED') THEN NULL ELSE rt END,
               CASE WHEN s IN ('PENDING', 'RETRY', 'STARTED') THEN qa
                    ELSE qa + interval '50 ms' + make_interval(secs => rt) END
        FROM (
            SELECT i,
                   {names}[1 + abs(hashtext(i || 'n')) %% {len(TASK_NAMES)}] AS n,
                   'default' AS q,
                   CASE WHEN i %% 10 = 9 THEN NULL WHEN i %% 2 = 0 THEN %(a)s ELSE %(b)s END AS o,
                   CASE WHEN NOT %(expired)s AND i < 8 THEN 'PENDING'
                        WHEN NOT %(expired)s AND i < 16 THEN 'STARTED'
                        WHEN NOT %(expired)s AND i < 20 THEN 'RETRY'
                        WHEN abs(hashtext(i || 'f')) %% 100 < 5 THEN 'FAILURE'
                        WHEN abs(hashtext(i || 'f')) %% 100 < 6 THEN 'REVOKED'
                        ELSE 'SUCCESS' END AS s,
                   (abs(hashtext(i || 't')) %% 3000) / 1000.0 AS rt,
                   now() - make_interval(days => %(age_days)s, secs => i * %(step)s) AS qa
            FROM generate_series(%(lo)s::int, %(hi)s::int) AS i
        ) AS rows
        """,  # noqa: S608 (this module's constants, no input)
        {
            "base": EXPIRED_ID_BASE if expired else ID_BASE,
            "prefix": "bench-expired-" if expired else "bench-",
            "a": a,
            "b": b,
            "lo": lo,
            "hi": hi - 1,
            "expired": expired,
            "age_days": RETENTION_DAYS + 30 if expired else 0,
            "step": LEDGER_STEP_SECONDS,
        },
    )


def _fill(conn: Any, seed: dict[str, Any], lo: int, hi: int) -> float:
    """Grow tickets and the ledger from `lo` to `hi` rows, plus the expired backlog; seconds."""
    started = time.perf_counter()
    for start in range(lo, hi, FILL_CHUNK):
        end = min(hi, start + FILL_CHUNK)
        with conn.transaction():
            _fill_tickets(conn, seed, start, end)
            _fill_ledger(conn, seed, start, end, expired=False)
    # The backlog the cleanup finds: a tenth of this step's size, past the retention.
    with conn.transaction():
        _fill_ledger(conn, seed, lo // 10, hi // 10, expired=True)
    for table in ("tickets_ticket", "mlmodels_prediction", "taskops_taskrecord"):
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", (ID_BASE * 2 + 10,)
        )
    return time.perf_counter() - started


def _vacuum(conn: Any) -> None:
    # What autovacuum does to a table that grew: statistics and the visibility map.
    for table in (
        "tickets_ticket",
        "tickets_labelchange",
        "mlmodels_prediction",
        "taskops_taskrecord",
    ):
        conn.execute(f"VACUUM (ANALYZE) {table}")


# ------------------------------------------------------------------------------
# The cleanup, in a child process of its own (its peak RSS is its own)
# ------------------------------------------------------------------------------
CLEANUP_CHILD = """
import json, resource, time, django
django.setup()
from taskops import services
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
report = services.task_records_cleanup()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("CLEANUP_JSON:" + json.dumps({"seconds": seconds, "rss_before_kb": before,
                                   "rss_peak_kb": peak, "report": report}))
"""


def _cleanup(env: dict[str, str]) -> dict[str, Any]:
    process = subprocess.run(
        [sys.executable, "-c", CLEANUP_CHILD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    for line in process.stdout.splitlines():
        if line.startswith("CLEANUP_JSON:"):
            return json.loads(line.removeprefix("CLEANUP_JSON:"))
    raise RuntimeError(f"the cleanup failed:\n{process.stdout[-2000:]}\n{process.stderr[-3000:]}")


# ------------------------------------------------------------------------------
# The server and the requests
# ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_env(url: str) -> dict[str, str]:
    broker = os.environ.get("CELERY_BROKER_URL", "")
    env = {
        **os.environ,
        **production_env(),
        "DATABASE_URL": url,
        "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1,testserver",
        "ZENITH_THROTTLE": "0",
        "ZENITH_METRICS_TOKEN": METRICS_TOKEN,
        "ZENITH_TASK_RETENTION_DAYS": str(RETENTION_DAYS),
        "PYTHONPATH": str(ROOT),
    }
    if not broker.startswith("redis://"):
        env["CELERY_BROKER_URL"] = "redis://127.0.0.1:6379/15"
    return env


def _start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        *(sys.executable, "-m", "gunicorn", "zenith.wsgi", "--workers", "1"),
        *("--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--timeout", "300"),
    ]
    with log.open("wb") as handle:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _wait_ready(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    import requests

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"gunicorn did not start:\n{log.read_text(errors='replace')[-3000:]}")


def _requests_of(seed: dict[str, Any]) -> list[dict[str, Any]]:
    org = seed["orgs"][0]
    member = {"Authorization": f"Token {seed['tokens']['member']}"}
    staff = {"Authorization": f"Token {seed['tokens']['ops']}"}
    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    return [
        {"name": "ticket_list", "path": "/api/v1/tickets/", "headers": member},
        {"name": "ticket_list_status", "path": "/api/v1/tickets/?status=open", "headers": member},
        {
            "name": "ticket_list_category",
            "path": "/api/v1/tickets/?category=cat-3",
            "headers": member,
        },
        {
            "name": "tasks_organization",
            "path": f"/api/v1/tasks/organization/{org}/",
            "headers": member,
        },
        {"name": "tasks_active", "path": "/api/v1/tasks/active/", "headers": member, "slow": True},
        {
            "name": "tasks_health",
            "path": "/api/v1/tasks/health/",
            "headers": staff,
            "slow": True,
            "ok": (200, 503),
        },
        {"name": "metrics", "path": "/metrics", "headers": bearer},
        {"name": "review_queue", "path": "/api/v1/tickets/review/", "headers": member},
    ]


def _time_requests(base: str, request: dict[str, Any], repeats: int) -> dict[str, Any]:
    import requests

    ok = request.get("ok", (200,))
    timings: list[float] = []
    body: Any = None
    with requests.Session() as session:
        session.headers.update(request["headers"])
        for n in range(WARMUP + repeats):
            started = time.perf_counter()
            response = session.get(base + request["path"], timeout=300)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code not in ok:
                raise RuntimeError(
                    f"{request['path']}: {response.status_code} {response.text[:300]}"
                )
            if n >= WARMUP:
                timings.append(elapsed)
            body = response
    summary: dict[str, Any] = {
        "p50": statistics.median(timings),
        "p95": sorted(timings)[max(0, round(0.95 * len(timings)) - 1)],
    }
    if body is not None and body.headers.get("Content-Type", "").startswith("application/json"):
        data = body.json()
        if isinstance(data, dict) and "results" in data:
            summary["count"] = data.get("count")
            summary["rows"] = len(data["results"])
    return summary


# ------------------------------------------------------------------------------
# EXPLAIN of the slowest statement of a slow request (in this process, on the bench DB)
# ------------------------------------------------------------------------------
def _explain_slow(url: str, seed: dict[str, Any], slow: list[dict[str, Any]]) -> str:
    os.environ.update(_server_env(url))
    os.environ["DJANGO_SETTINGS_MODULE"] = "zenith.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    sections = []
    for request in slow:
        client = APIClient()
        headers = {"HTTP_AUTHORIZATION": request["headers"]["Authorization"]}
        client.get(request["path"], **headers)  # warm
        with CaptureQueriesContext(connection) as queries:
            client.get(request["path"], **headers)
        ranked = sorted(queries.captured_queries, key=lambda q: float(q["time"]), reverse=True)
        for query in ranked[:2]:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + query["sql"])
                plan = "\n".join(row[0] for row in cursor.fetchall())
            sections.append(
                f"## {request['name']} `{request['path']}` ({request['p50']:.1f} ms p50)\n\n"
                f"{len(queries.captured_queries)} statements; this one took "
                f"{float(query['time']) * 1000:.1f} ms:\n\n```sql\n{query['sql']}\n```\n\n"
                f"```\n{plan}\n```\n"
            )
    connection.close()
    return "\n".join(sections)


# ------------------------------------------------------------------------------
def _row(name: str, results: dict[int, dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    low, high = results[sizes[0]], results[sizes[-1]]
    middle = [f"{size:,}: p50 {results[size]['p50']:.1f} ms" for size in sizes[1:-1]]
    counts = ", ".join(
        f"{size:,}: count {results[size]['count']}"
        for size in sizes
        if results[size].get("count") is not None
    )
    note = (
        f"p50 at {sizes[-1]:,} tickets (value) vs {sizes[0]:,} (baseline), aim <= 2x; "
        f"p95 {high['p95']:.1f} / {low['p95']:.1f} ms"
    )
    if middle:
        note += "; " + "; ".join(middle)
    if counts:
        note += f"; {counts}"
    return {
        "name": f"scale_{name}_p50",
        "value": round(high["p50"], 2),
        "baseline": round(low["p50"], 2),
        "ratio": round(high["p50"] / low["p50"], 3),
        "unit": "ms",
        "note": note,
    }


def run() -> list[dict[str, Any]]:
    """Measure and return the rows `make bench` collects."""
    import psycopg

    sizes = _sizes()
    repeats = _repeats()
    database = BenchDatabase("scale")
    if not database.postgres:
        return [{"name": "scale", "note": "skipped: needs a PostgreSQL DATABASE_URL"}]
    env = _server_env(database.url)
    log: Callable[[str], None] = lambda text: print(f"  bench_scale: {text}", flush=True)  # noqa: E731
    results: dict[str, dict[int, dict[str, Any]]] = {}
    cleanups: dict[int, dict[str, Any]] = {}
    fills: dict[int, float] = {}
    explain = ""
    database.create({**env, "DJANGO_DEBUG": "1"})
    try:
        with psycopg.connect(database.url, autocommit=True) as conn:
            seed = _seed(conn)
            requests_ = _requests_of(seed)
            with tempfile.TemporaryDirectory(prefix="zenith-bench-scale-") as tmp:
                port = _free_port()
                base = f"http://127.0.0.1:{port}"
                server = _start_server(env, port, Path(tmp) / "gunicorn.log")
                try:
                    _wait_ready(server, base, Path(tmp) / "gunicorn.log")
                    filled = 0
                    for size in sizes:
                        fills[size] = _fill(conn, seed, filled, size)
                        filled = size
                        _vacuum(conn)
                        log(f"filled to {size:,} in {fills[size]:.1f}s; cleanup ...")
                        cleanups[size] = _cleanup(env)
                        _vacuum(conn)
                        for request in requests_:
                            n = SLOW_REPEATS if request.get("slow") else repeats
                            outcome = _time_requests(base, request, n)
                            results.setdefault(request["name"], {})[size] = outcome
                            log(f"{size:,} {request['name']}: p50 {outcome['p50']:.1f} ms")
                finally:
                    server.terminate()
                    try:
                        server.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        server.kill()
                        server.wait()
            slow = [
                {**request, "p50": results[request["name"]][sizes[-1]]["p50"]}
                for request in requests_
                if results[request["name"]][sizes[-1]]["p50"] > SLOW_MS
            ]
            if slow:
                explain = _explain_slow(database.url, seed, slow)
    finally:
        # ZENITH_BENCH_SCALE_KEEP=1 leaves the filled database for a look (its name is printed).
        if os.environ.get("ZENITH_BENCH_SCALE_KEEP") == "1":
            log(f"kept the database {database.name}")
        else:
            database.drop()
    target = Path(
        os.environ.get(
            "ZENITH_BENCH_SCALE_EXPLAIN", ROOT / "bench" / "results" / "explain_scale.md"
        )
    )
    target.parent.mkdir(exist_ok=True)
    target.write_text(
        f"# EXPLAIN (ANALYZE, BUFFERS) of the requests over {SLOW_MS:g} ms at "
        f"{sizes[-1]:,} tickets\n\n{explain or 'none'}\n"
    )
    rows = [_row(name, by_size, sizes) for name, by_size in results.items()]
    low, high = cleanups[sizes[0]], cleanups[sizes[-1]]
    deleted = {size: cleanups[size]["report"].get("ledger", 0) for size in sizes}
    per_k = {
        size: cleanups[size]["seconds"] * 1000 / max(deleted[size], 1) * 1000 for size in sizes
    }
    rows.append(
        {
            "name": "scale_cleanup_ms_per_1k_deleted",
            "value": round(per_k[sizes[-1]], 2),
            "baseline": round(per_k[sizes[0]], 2),
            "ratio": round(per_k[sizes[-1]] / max(per_k[sizes[0]], 1e-6), 3),
            "unit": "ms",
            "note": "cleanup_old_task_results (taskops.services.task_records_cleanup) in a "
            "child process, per 1,000 expired ledger rows deleted (the backlog is a tenth of "
            "each step); whole runs: "
            + ", ".join(
                f"{size:,}: {deleted[size]:,} rows in {cleanups[size]['seconds']:.2f}s"
                for size in sizes
            ),
        }
    )
    rows.append(
        {
            "name": "scale_cleanup_peak_rss",
            "value": round(high["rss_peak_kb"] / 1024, 1),
            "baseline": round(low["rss_peak_kb"] / 1024, 1),
            "ratio": round(high["rss_peak_kb"] / low["rss_peak_kb"], 3),
            "unit": "MB",
            "note": "peak RSS of the cleanup's process (Django loaded: "
            + ", ".join(
                f"{size:,}: {cleanups[size]['rss_before_kb'] / 1024:.0f} -> "
                f"{cleanups[size]['rss_peak_kb'] / 1024:.0f} MB"
                for size in sizes
            )
            + "); flat = batches, no rows held",
        }
    )
    rows.append(
        {
            "name": "scale_fill_seconds",
            "value": round(sum(fills.values()), 1),
            "baseline": None,
            "ratio": None,
            "unit": "s",
            "note": "INSERT ... SELECT generate_series with the shipped indexes: "
            + ", ".join(f"to {size:,} in {fills[size]:.1f}s" for size in sizes),
        }
    )
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(json.dumps(run(), indent=2))
