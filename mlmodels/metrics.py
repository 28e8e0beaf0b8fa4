"""Models on /metrics: review load (how many new tickets a model was unsure about), live accuracy.

Registered with taskops' /metrics from MLModelsConfig.ready(), since taskops cannot import
this app. Reads the database at each scrape, like the rest of /metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlmodels.models import ModelStatus, ModelVersion, Prediction
from mlmodels.selectors import model_version_live_accuracy
from tickets.models import Organization, Ticket

DAY = timedelta(hours=24)


class ReviewCollector(Collector):
    """Tickets of the last 24 hours that a model labelled, flagged for review, still unreviewed.

    A ticket is flagged when a prediction applied to it is less confident than its
    organization's threshold (what sets `needs_review`); it stays counted as flagged after a
    person has reviewed it, while `needing_review` counts only those still waiting.
    """

    def collect(self) -> Iterator[Metric]:
        applied = Prediction.objects.filter(ticket_id=OuterRef("pk"), applied=True)
        unsure = applied.filter(confidence__lt=OuterRef("organization__confidence_threshold"))
        rows = (
            # Ticket.created_at is indexed, and each EXISTS probes the (ticket, ...) unique
            # index of the predictions: the cost follows one day of tickets.
            Ticket.objects.filter(created_at__gte=timezone.now() - DAY)
            .order_by()
            .values("organization_id")
            .annotate(
                classified=Count("id", filter=Exists(applied)),
                flagged=Count("id", filter=Exists(unsure)),
                waiting=Count("id", filter=Q(needs_review=True)),
            )
        )
        counts = {
            row["organization_id"]: (row["classified"], row["flagged"], row["waiting"])
            for row in rows
        }
        classified = GaugeMetricFamily(
            "zenith_tickets_classified_last_day",
            "Tickets created in the last 24 hours that a model labelled, by organization.",
            labels=["organization"],
        )
        flagged = GaugeMetricFamily(
            "zenith_tickets_below_threshold_last_day",
            "Tickets created in the last 24 hours with a model label below the organization's "
            "confidence threshold (flagged for review), by organization.",
            labels=["organization"],
        )
        waiting = GaugeMetricFamily(
            "zenith_tickets_needing_review_last_day",
            "Tickets created in the last 24 hours still flagged for a person's review, "
            "by organization.",
            labels=["organization"],
        )
        for org_id, slug in Organization.objects.order_by("slug").values_list("id", "slug"):
            n_classified, n_flagged, n_waiting = counts.get(org_id, (0, 0, 0))
            classified.add_metric([slug], n_classified)
            flagged.add_metric([slug], n_flagged)
            waiting.add_metric([slug], n_waiting)
        yield classified
        yield flagged
        yield waiting


class LiveAccuracyCollector(Collector):
    """Live beside offline accuracy of every serving model version.

    Live accuracy is the share of reviewed predictions people kept (selectors.
    model_version_live_accuracy); offline accuracy is the version's held-out score. An alert
    rule can compare the two (e.g. live 10 points below offline).
    """

    def collect(self) -> Iterator[Metric]:
        versions = list(
            ModelVersion.objects.filter(status=ModelStatus.ACTIVE)
            .select_related("organization")
            .only("id", "organization__slug", "target", "version", "metrics")
            .order_by("organization__slug", "target")
        )
        live = model_version_live_accuracy(versions=versions)
        labels = ["organization", "target", "version"]
        live_gauge = GaugeMetricFamily(
            "zenith_model_live_accuracy",
            "Share of reviewed predictions of the serving model that people kept "
            "(absent until a prediction is reviewed).",
            labels=labels,
        )
        offline_gauge = GaugeMetricFamily(
            "zenith_model_offline_accuracy",
            "Held-out accuracy of the serving model when it was trained.",
            labels=labels,
        )
        reviewed_gauge = GaugeMetricFamily(
            "zenith_model_reviewed_predictions",
            "Predictions of the serving model that a person reviewed (kept or changed).",
            labels=labels,
        )
        for version in versions:
            values = [version.organization.slug, version.target, str(version.version)]
            row = live[version.pk]
            reviewed_gauge.add_metric(values, row["reviewed"])
            if row["live_accuracy"] is not None:
                live_gauge.add_metric(values, row["live_accuracy"])
            if version.accuracy is not None:
                offline_gauge.add_metric(values, version.accuracy)
        yield live_gauge
        yield offline_gauge
        yield reviewed_gauge
