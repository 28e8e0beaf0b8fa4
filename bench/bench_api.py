"""What DRF costs on the ticket list: `GET /api/v1/tickets/` under gunicorn vs a bare Django view.

    python -m bench bench_api
    ZENITH_BENCH_API_REQUESTS=2000 python -m bench bench_api

Seeds ~2,000 tickets in one organization of a throwaway database (PostgreSQL when DATABASE_URL
says so, else SQLite), starts `gunicorn zenith.wsgi`-equivalent (bench/settings_api.py: Zenith's
settings plus bench/api_urls.py, which adds one plain JsonResponse view of the same page with
.values()) with 2 workers, and has 8 threads (one requests.Session each) send a fixed number of
requests to each URL. Also counts the SQL queries of the API list at page sizes 10 and 100
in-process: they should be equal (no N+1).

`run()` returns rows {"name", "value", "baseline", "ratio", "unit", "note"} for `make bench`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

from bench.common import ROOT, setup_django, teardown_django

TICKETS = 2000
THREADS = 8
WORKERS = 2
READY_TIMEOUT = 60.0


def _requests() -> int:
    return int(os.environ.get("ZENITH_BENCH_API_REQUESTS", "800"))


def _seed() -> str:
    """One organization, an admin with a token, TICKETS tickets; the token key."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from tickets.models import Membership, Organization, Role, Source, Ticket

    organization = Organization.objects.create(slug="bench", name="Bench")
    user = get_user_model().objects.create_user(username="bench-admin", password=None)
    Membership.objects.create(user=user, organization=organization, role=Role.ADMIN)
    Ticket.objects.bulk_create(
        [
            Ticket(
                organization=organization,
                source=Source.API,
                external_id=f"bench-{i}",
                subject=f"printer on floor {i} does not print",
                body="the office printer shows an error and nothing comes out",
                requester="someone@example.com",
            )
            for i in range(TICKETS)
        ],
        batch_size=500,
    )
    return Token.objects.create(user=user).key


def _query_counts(token: str) -> dict[int, int]:
    """SQL queries of one API list request at page sizes 10 and 100."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.pagination import PageNumberPagination
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    counts: dict[int, int] = {}
    original = PageNumberPagination.page_size
    try:
        for size in (10, 100):
            PageNumberPagination.page_size = size
            with CaptureQueriesContext(connection) as queries:
                response = client.get("/api/v1/tickets/")
            assert response.status_code == 200, response.content[:300]
            assert len(response.json()["results"]) == size
            counts[size] = len(queries)
    finally:
        PageNumberPagination.page_size = original
    return counts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _database_url(database: str) -> str:
    from django.db import connection

    if database == "postgresql":
        parsed = urlparse(os.environ["DATABASE_URL"])
        return urlunparse(parsed._replace(path=f"/{connection.settings_dict['NAME']}"))
    return os.environ["DATABASE_URL"]


def _start_gunicorn(tmp: Path, database: str, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings_api",
        "DATABASE_URL": _database_url(database),
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp / "gunicorn.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "zenith.wsgi",
        "--workers",
        str(WORKERS),
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(process: subprocess.Popen[bytes], url: str, token: str, tmp: Path) -> None:
    import requests

    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            response = requests.get(url, headers={"Authorization": f"Token {token}"}, timeout=5)
            if response.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    log = (tmp / "gunicorn.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"gunicorn did not serve {url}:\n{log}")


def _load(url: str, token: str, total: int) -> float:
    """Requests per second of THREADS sessions sending `total` GETs between them."""
    import requests

    per_thread = total // THREADS
    errors: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Token {token}"
            for _ in range(per_thread):
                response = session.get(url, timeout=30)
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                response.json()

    threads = [threading.Thread(target=client) for _ in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{url} failed under load: {errors[0]}")
    return per_thread * THREADS / elapsed


def run() -> list[dict[str, Any]]:
    """Measure and return the rows `make bench` collects."""
    total = _requests()
    with tempfile.TemporaryDirectory(prefix="zenith-bench-api-") as name:
        tmp = Path(name)
        database = setup_django(tmp, name="api")
        from django.db import connection

        try:
            token = _seed()
            counts = _query_counts(token)
            connection.close()
            port = _free_port()
            base = f"http://127.0.0.1:{port}"
            api_url, plain_url = f"{base}/api/v1/tickets/", f"{base}/bench/plain-tickets/"
            server = _start_gunicorn(tmp, database, port)
            try:
                _wait_ready(server, api_url, token, tmp)
                _load(api_url, token, THREADS * 5)  # warm-up: imports, connections
                _load(plain_url, token, THREADS * 5)
                plain = _load(plain_url, token, total)
                api = _load(api_url, token, total)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
        finally:
            teardown_django(database)
    equal = "equal" if counts[10] == counts[100] else "NOT equal (grows with the page)"
    return [
        {
            "name": "api_ticket_list_throughput",
            "value": round(api, 1),
            "baseline": round(plain, 1),
            "ratio": round(api / plain, 3),
            "unit": "req/s",
            "note": (
                f"GET /api/v1/tickets/ (DRF, page of 50, token auth, with the apps' output "
                f"extensions and prefetches) vs a plain JsonResponse view of the same page "
                f"with .values(); gunicorn {WORKERS} sync workers, "
                f"{THREADS} client threads, {total} requests per URL, {TICKETS} tickets, {database}"
            ),
        },
        {
            "name": "api_ticket_list_queries",
            "value": counts[100],
            "baseline": counts[10],
            "ratio": round(counts[100] / counts[10], 3),
            "unit": "queries",
            "note": f"SQL queries of one list request at page size 100 (value) vs 10 "
            f"(baseline): {equal}",
        },
    ]


if __name__ == "__main__":
    import json

    sys.path.insert(0, str(ROOT))
    print(json.dumps(run(), indent=2))
