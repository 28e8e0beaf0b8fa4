"""The floor under Zenith's task path: a bare, Django-free Celery app (bench/bench_floor.py).

    ZENITH_FLOOR_REDIS_URL=redis://127.0.0.1:6379/6 celery -A bench.floor_app worker \
        --pool prefork --concurrency 2 --queues floor

Redis broker and Redis result backend, late acks, prefetch 1: the worker options Zenith's
workers run with, and nothing of Zenith's (no Django, no ledger, no signal receivers).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

REDIS_URL = os.environ.get("ZENITH_FLOOR_REDIS_URL", "redis://127.0.0.1:6379/15")

# fixups=[]: Celery's Django fixup would load Django whenever DJANGO_SETTINGS_MODULE is set.
app = Celery("floor", broker=REDIS_URL, backend=REDIS_URL, fixups=[])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    result_expires=60 * 60,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="floor.noop")
def noop(**kwargs: Any) -> None:
    """Do nothing: what one task costs Celery itself."""
