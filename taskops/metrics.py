"""`/metrics` in Prometheus text format, read from the database at each scrape.

Counters kept in a process would differ between web processes; reading the ledger makes
every process report the same numbers.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from taskops import health
from taskops.models import ACTIVE_STATES, FINAL_STATES, Heartbeat, TaskRecord, TaskState

logger = logging.getLogger(__name__)

RECENT = timedelta(hours=1)
DAY = timedelta(hours=24)


class LedgerCollector(Collector):
    """Tasks by name and state, recent runtimes, queue depths and beat's heartbeat age."""

    def collect(self) -> Iterator[Metric]:
        yield from self._tasks()
        yield from self._runtimes()
        yield from self._queues()
        yield from self._beat()

    def _tasks(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "zenith_tasks",
            "Tasks queued in the last 24 hours, by name and state.",
            labels=["name", "state"],
        )
        rows = (
            TaskRecord.objects.filter(queued_at__gte=timezone.now() - DAY)
            .order_by()
            .values("name", "state")
            .annotate(n=Count("id"))
        )
        counts = {(row["name"], row["state"]): row["n"] for row in rows}
        for name in sorted({name for name, _ in counts}):
            for state in TaskState.values:
                tasks.add_metric([name, state], counts.get((name, state), 0))
        yield tasks

    def _runtimes(self) -> Iterator[Metric]:
        since = timezone.now() - RECENT
        rows = (
            # updated_at is set by the write that finishes a task, and is indexed with state.
            TaskRecord.objects.filter(
                state__in=FINAL_STATES, updated_at__gte=since, finished_at__gte=since
            )
            .order_by()
            .values("name", "state")
            .annotate(
                n=Count("id"), timed=Count("runtime"), total=Sum("runtime"), peak=Max("runtime")
            )
        )
        finished = GaugeMetricFamily(
            "zenith_tasks_finished_last_hour",
            "Tasks that finished in the last hour, by name and final state.",
            labels=["name", "state"],
        )
        per_name: dict[str, list[float]] = {}  # name -> [timed runs, total seconds, longest]
        for row in rows:
            finished.add_metric([row["name"], row["state"]], row["n"])
            if row["timed"]:
                acc = per_name.setdefault(row["name"], [0, 0.0, 0.0])
                acc[0] += row["timed"]
                acc[1] += row["total"] or 0.0
                acc[2] = max(acc[2], row["peak"] or 0.0)
        avg = GaugeMetricFamily(
            "zenith_task_runtime_avg_seconds",
            "Average runtime of the tasks that finished in the last hour.",
            labels=["name"],
        )
        peak = GaugeMetricFamily(
            "zenith_task_runtime_max_seconds",
            "Longest runtime of the tasks that finished in the last hour.",
            labels=["name"],
        )
        for name, (timed, total, longest) in sorted(per_name.items()):
            avg.add_metric([name], total / timed)
            peak.add_metric([name], longest)
        yield finished
        yield avg
        yield peak

    def _queues(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "zenith_queue_waiting_tasks",
            "Tasks the ledger has queued or waiting to retry, by queue.",
            labels=["queue"],
        )
        rows = (
            TaskRecord.objects.filter(state__in=[TaskState.PENDING, TaskState.RETRY])
            .order_by()
            .values("queue")
            .annotate(n=Count("id"))
        )
        counts = {row["queue"]: row["n"] for row in rows}
        for queue in sorted(set(health.required_queues()) | set(counts)):
            waiting.add_metric([queue or "unknown"], counts.get(queue, 0))
        yield waiting

        depth = GaugeMetricFamily(
            "zenith_queue_depth",
            "Messages in the broker's queue (Redis list lengths), by queue.",
            labels=["queue"],
        )
        for queue, n in sorted(_broker_depths().items()):
            depth.add_metric([queue], n)
        yield depth

    def _beat(self) -> Iterator[Metric]:
        heartbeat = Heartbeat.objects.filter(name="beat").first()
        age = GaugeMetricFamily(
            "zenith_beat_heartbeat_age_seconds",
            "Seconds since health_check_tasks (sent by beat every minute) last ran; "
            "absent when it never ran.",
        )
        if heartbeat is not None:
            age.add_metric([], (timezone.now() - heartbeat.last_seen).total_seconds())
        yield age
        active = GaugeMetricFamily(
            "zenith_tasks_active", "Tasks queued, running or waiting to retry."
        )
        active.add_metric([], TaskRecord.objects.filter(state__in=ACTIVE_STATES).count())
        yield active


def _broker_depths() -> dict[str, int]:
    from zenith.celery import app

    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=health.BROKER_TIMEOUT)
            return health.queue_depths(conn, health.required_queues()) or {}
    except Exception as exc:  # an unreachable broker leaves the series out, not the scrape
        logger.warning("metrics: cannot read queue depths: %s", exc)
        return {}


def metrics_allowed(request: HttpRequest) -> bool:
    """A bearer token equal to ZENITH_METRICS_TOKEN, or a staff member's session."""
    token = settings.ZENITH_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header.removeprefix("Bearer ").strip().encode(), token.encode())
    user: Any = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        response = HttpResponse("metrics need a bearer token or a staff session\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="zenith-metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
