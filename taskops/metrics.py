"""`/metrics` in Prometheus text format, read from the database at each scrape.

Counters kept in a process would differ between web processes; reading the ledger makes
every process report the same numbers.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, cast

from celery import current_app
from django.conf import settings
from django.db.models import Count, Max, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from taskops import health
from taskops.models import ACTIVE_STATES, FINAL_STATES, Heartbeat, TaskRecord, TaskState
from tickets.models import Organization, Source, Ticket

logger = logging.getLogger(__name__)

RECENT = timedelta(hours=1)
DAY = timedelta(hours=24)
# Upper bounds (seconds) of the runtime histogram; the hard time limit is 30 minutes.
RUNTIME_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0)

# Collectors of other apps (which build on taskops, so taskops cannot import them),
# added from their AppConfig.ready() through collector_register().
_extra_collectors: list[Callable[[], Collector]] = []


def collector_register(factory: Callable[[], Collector]) -> None:
    """Add a collector (made afresh for each scrape) to /metrics; registering twice is a no-op."""
    if factory not in _extra_collectors:
        _extra_collectors.append(factory)


class LedgerCollector(Collector):
    """Tasks by name and state, recent runtimes, queue depths and beat's heartbeat age."""

    def collect(self) -> Iterator[Metric]:
        names: set[str] = set()
        yield from self._tasks(names)
        yield from self._runtimes()
        yield from self._queues()
        yield from self._beat(names)

    def _tasks(self, names: set[str]) -> Iterator[Metric]:
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
        names.update(name for name, _ in counts)
        for name in sorted(names):
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
                n=Count("id"),
                timed=Count("runtime"),
                total=Sum("runtime"),
                peak=Max("runtime"),
                # Cumulative bucket counts in the same scan: NULL runtimes match none.
                **{
                    f"le_{i}": Count("id", filter=Q(runtime__lte=bound))
                    for i, bound in enumerate(RUNTIME_BUCKETS)
                },
            )
        )
        finished = GaugeMetricFamily(
            "zenith_tasks_finished_last_hour",
            "Tasks that finished in the last hour, by name and final state.",
            labels=["name", "state"],
        )
        per_name: dict[str, list[float]] = {}  # name -> [timed runs, total seconds, longest]
        buckets: dict[str, list[int]] = {}  # name -> runs at or under each bound
        for row in rows:
            finished.add_metric([row["name"], row["state"]], row["n"])
            if row["timed"]:
                acc = per_name.setdefault(row["name"], [0, 0.0, 0.0])
                acc[0] += row["timed"]
                acc[1] += row["total"] or 0.0
                acc[2] = max(acc[2], row["peak"] or 0.0)
                counts = buckets.setdefault(row["name"], [0] * len(RUNTIME_BUCKETS))
                bucketed = cast("dict[str, int]", row)
                for i in range(len(RUNTIME_BUCKETS)):
                    counts[i] += bucketed[f"le_{i}"]
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
        histogram = GaugeHistogramMetricFamily(
            "zenith_task_runtime_last_hour_seconds",
            "Runtimes of the tasks that finished in the last hour, by name "
            "(for histogram_quantile over the _bucket series).",
            labels=["name"],
        )
        for name, (timed, total, longest) in sorted(per_name.items()):
            avg.add_metric([name], total / timed)
            peak.add_metric([name], longest)
            histogram.add_metric(
                [name],
                [
                    *(
                        (floatToGoString(bound), n)
                        for bound, n in zip(RUNTIME_BUCKETS, buckets[name], strict=True)
                    ),
                    ("+Inf", int(timed)),
                ],
                gsum_value=total,
            )
        yield finished
        yield avg
        yield peak
        yield histogram

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

    def _beat(self, names: set[str]) -> Iterator[Metric]:
        heartbeat = Heartbeat.objects.filter(name="beat").first()
        age = GaugeMetricFamily(
            "zenith_beat_heartbeat_age_seconds",
            "Seconds since health_check_tasks (sent by beat every minute) last ran; "
            "absent when it never ran.",
        )
        if heartbeat is not None:
            age.add_metric([], (timezone.now() - heartbeat.last_seen).total_seconds())
        yield age
        rows = (
            TaskRecord.objects.filter(state__in=ACTIVE_STATES)
            .order_by()
            .values("name", "state")
            .annotate(n=Count("id"))
        )
        counts = {(row["name"], row["state"]): row["n"] for row in rows}
        active = GaugeMetricFamily(
            "zenith_tasks_active", "Tasks queued, running or waiting to retry."
        )
        active.add_metric([], sum(counts.values()))
        yield active
        unfinished = GaugeMetricFamily(
            "zenith_tasks_unfinished",
            "Tasks queued, running or waiting to retry now, by name and state.",
            labels=["name", "state"],
        )
        # Zeros for the names seen in the last 24 hours keep each series continuous.
        for name in sorted(names | {name for name, _ in counts}):
            for state in ACTIVE_STATES:
                unfinished.add_metric([name, state], counts.get((name, state), 0))
        yield unfinished


class TicketCollector(Collector):
    """Tickets ingested in the last hour and day, by organization and source."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        rows = (
            # Ticket.created_at is indexed: the scan covers one day of tickets.
            Ticket.objects.filter(created_at__gte=now - DAY)
            .order_by()
            .values("organization_id", "source")
            .annotate(day=Count("id"), hour=Count("id", filter=Q(created_at__gte=now - RECENT)))
        )
        counts = {
            (row["organization_id"], row["source"]): (row["hour"], row["day"]) for row in rows
        }
        hour = GaugeMetricFamily(
            "zenith_tickets_ingested_last_hour",
            "Tickets created in the last hour, by organization and source.",
            labels=["organization", "source"],
        )
        day = GaugeMetricFamily(
            "zenith_tickets_ingested_last_day",
            "Tickets created in the last 24 hours, by organization and source.",
            labels=["organization", "source"],
        )
        sources = sorted(set(Source.values) | {source for _, source in counts})
        for org_id, slug in Organization.objects.order_by("slug").values_list("id", "slug"):
            for source in sources:
                in_hour, in_day = counts.get((org_id, source), (0, 0))
                hour.add_metric([slug, source], in_hour)
                day.add_metric([slug, source], in_day)
        yield hour
        yield day


def _broker_depths() -> dict[str, int]:
    try:
        with current_app.connection_for_read() as conn:
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
        response = JsonResponse(
            {"detail": "metrics need a bearer token or a staff session"}, status=401
        )
        response["WWW-Authenticate"] = 'Bearer realm="zenith-metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LedgerCollector())
    registry.register(TicketCollector())
    for factory in _extra_collectors:
        registry.register(factory())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
