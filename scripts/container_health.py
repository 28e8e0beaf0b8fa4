#!/usr/bin/env python
"""Container healthchecks of docker/docker-compose.yml: exit 0 when healthy, 1 when not.

    scripts/container_health.py web                      # GET /readyz answers 200
    scripts/container_health.py worker --worker-type ml  # this container's own node answers ping
    scripts/container_health.py beat                     # a beat holds the schedule lease
    scripts/container_health.py flower                   # Flower's /healthcheck answers

A worker is asked by its own node name (`<type>@<container host name>`, as
scripts/start_celery_worker.py names it), so one worker never vouches for another.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (fixed local URL)
            return response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return False


def worker_ok(worker_type: str) -> bool:
    from zenith.celery import app

    node = f"{worker_type}@{socket.gethostname()}"
    replies = app.control.ping(destination=[node], timeout=10.0)
    answered = any(node in reply for reply in replies)
    print(f"{node}: {'pong' if answered else 'no answer'}")
    return answered


def beat_ok() -> bool:
    """A beat renews the schedule lease (taskops/beat.py) within ZENITH_BEAT_LEASE_SECONDS.

    One SQL query, without django.setup() (which imports every app, scikit-learn included).
    """
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT holder, expires_at > now(), EXTRACT(EPOCH FROM now() - renewed_at)"
            " FROM taskops_schedulerlease WHERE name = %s",
            ["beat"],
        )
        row = cursor.fetchone()
    if row is None or row[2] is None:
        print("no beat has held the lease yet")
        return False
    holder, unexpired, renewed_ago = row
    fresh = bool(unexpired) and float(renewed_ago) <= settings.ZENITH_BEAT_LEASE_SECONDS
    role = "this beat" if holder.startswith(f"{socket.gethostname()}:") else "another beat"
    verdict = "ok" if fresh else "stale"
    print(f"lease held by {role}, renewed {float(renewed_ago):.0f}s ago: {verdict}")
    return fresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service", choices=["web", "worker", "beat", "flower"])
    parser.add_argument("--worker-type", default="general")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenith.settings")
    if args.service == "web":
        healthy = http_ok(f"http://127.0.0.1:{args.port or 8000}/readyz")
    elif args.service == "flower":
        healthy = http_ok(f"http://127.0.0.1:{args.port or 5555}/healthcheck")
    elif args.service == "worker":
        healthy = worker_ok(args.worker_type)
    else:
        healthy = beat_ok()
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
