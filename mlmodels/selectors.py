"""Reads of the model registry: versions, active models, unclassified tickets, label watermarks."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import (
    Count,
    Exists,
    F,
    Field,
    Max,
    Model,
    OuterRef,
    Q,
    QuerySet,
)
from django.utils import timezone

from mlmodels.models import ModelStatus, ModelVersion, Prediction, Target
from tickets.models import LabelChange, LabelSource, Organization, Role, Ticket
from tickets.selectors import organization_list_for_user

HUMAN_LABEL_SOURCES = (LabelSource.PERSON, LabelSource.IMPORT)


def model_version_list_for_user(
    *, user: Any, min_role: Role = Role.VIEWER
) -> QuerySet[ModelVersion]:
    """Model versions of every organization the user may see."""
    return ModelVersion.objects.filter(
        organization__in=organization_list_for_user(user=user, min_role=min_role)
    ).select_related("organization")


def model_version_list(
    *, organization: Organization, target: str | None = None
) -> QuerySet[ModelVersion]:
    """An organization's versions, newest first."""
    queryset = ModelVersion.objects.filter(organization=organization)
    if target:
        queryset = queryset.filter(target=target)
    return queryset.order_by("target", "-version")


def model_version_active(*, organization: Organization | int, target: str) -> ModelVersion | None:
    """The version serving `target` for the organization, if any."""
    org_id = organization if isinstance(organization, int) else organization.pk
    return (
        ModelVersion.objects.filter(
            organization_id=org_id, target=target, status=ModelStatus.ACTIVE
        )
        .select_related("organization")
        .first()
    )


# What serving reads of a version: classification asks for the active versions of every
# ticket, and loading whole rows (held-out ticket ids, confusion matrix) cost more than the query.
SERVING_FIELDS = (
    "id",
    "organization",
    "target",
    "version",
    "status",
    "artifact",
    "artifact_sha256",
)


def model_versions_active(*, organization: Organization | int) -> dict[str, ModelVersion]:
    """The serving version of each target that has one; fields beyond SERVING_FIELDS load on use."""
    org_id = organization if isinstance(organization, int) else organization.pk
    versions = ModelVersion.objects.filter(organization_id=org_id, status=ModelStatus.ACTIVE).only(
        *SERVING_FIELDS
    )
    return {version.target: version for version in versions}


# What classifying one ticket reads of its organization (the rest loads on use).
ORGANIZATION_SERVING_FIELDS = ("id", "slug", "confidence_threshold")


def _fields_in_order(model: type[Model], names: Sequence[str]) -> list[Field]:
    """The model's concrete fields named in `names`, in the model's order (as from_db wants)."""
    return [f for f in model._meta.concrete_fields if f.name in names or f.attname in names]


@functools.cache
def _ticket_serving_sql(ticket_fields: tuple[str, ...], scoped: bool) -> str:
    quote = connection.ops.quote_name

    def columns(alias: str, model: type[Model], names: Sequence[str]) -> str:
        return ", ".join(f"{alias}.{quote(f.column)}" for f in _fields_in_order(model, names))

    organization_fk = quote(Ticket._meta.get_field("organization").column)
    version_fk = quote(ModelVersion._meta.get_field("organization").column)
    return f"""
        SELECT {columns("t", Ticket, ticket_fields)},
            {columns("o", Organization, ORGANIZATION_SERVING_FIELDS)},
            (SELECT coalesce(json_agg(json_build_array(
                    {columns("v", ModelVersion, SERVING_FIELDS)})), '[]'::json)
                FROM {quote(ModelVersion._meta.db_table)} v
                WHERE v.{version_fk} = t.{organization_fk} AND v.{quote("status")} = %(active)s)
        FROM {quote(Ticket._meta.db_table)} t
        JOIN {quote(Organization._meta.db_table)} o ON o.{quote("id")} = t.{organization_fk}
        WHERE t.{quote("id")} = %(ticket)s
        {f"AND t.{organization_fk} = %(organization)s" if scoped else ""}
    """  # noqa: S608 - table and column names come from the models, values are parameters


def ticket_serving_read(
    *, ticket_id: int, organization_id: int | None = None, fields: Sequence[str]
) -> tuple[Ticket, dict[str, ModelVersion]] | None:
    """A ticket (only `fields`, with its organization's ORGANIZATION_SERVING_FIELDS) and the
    organization's serving versions, in one query; None when no such ticket (in that
    organization).

    What a classify task runs once per new ticket: one round trip instead of three (ticket,
    organization, active versions) and no query building.
    """
    ticket_fields = tuple(dict.fromkeys(("id", "organization", *fields)))
    sql = _ticket_serving_sql(ticket_fields, organization_id is not None)
    params = {"active": ModelStatus.ACTIVE.value, "ticket": ticket_id}
    if organization_id is not None:
        params["organization"] = organization_id
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    ticket_order = _fields_in_order(Ticket, ticket_fields)
    organization_order = _fields_in_order(Organization, ORGANIZATION_SERVING_FIELDS)
    version_order = _fields_in_order(ModelVersion, SERVING_FIELDS)
    split = len(ticket_order)
    ticket = Ticket.from_db(connection.alias, [f.attname for f in ticket_order], row[:split])
    ticket.organization = Organization.from_db(
        connection.alias,
        [f.attname for f in organization_order],
        row[split : split + len(organization_order)],
    )
    listed = row[-1]
    if isinstance(listed, str | bytes):
        listed = json.loads(listed)
    names = [f.attname for f in version_order]
    versions = [ModelVersion.from_db(connection.alias, names, values) for values in listed]
    return ticket, {version.target: version for version in versions}


# Asked once per new ticket. Only "yes" is cached: an organization never loses its last
# serving version (a roll back activates another), while a first promotion in another
# process must be seen at once even without a shared cache (REDIS_URL unset: locmem).
ACTIVE_MODEL_CACHE_SECONDS = 30


def _active_model_key(organization_id: int) -> str:
    return f"mlmodels:has-active-model:{organization_id}"


def organization_has_active_model(*, organization_id: int) -> bool:
    """Whether any target of the organization has a serving version (cached briefly)."""
    key = _active_model_key(organization_id)
    cached = cache.get(key)
    if cached is not None:
        return bool(cached)
    active = ModelVersion.objects.filter(
        organization_id=organization_id, status=ModelStatus.ACTIVE
    ).exists()
    if active:
        cache.set(key, active, timeout=ACTIVE_MODEL_CACHE_SECONDS)
    return active


def organization_has_active_model_forget(*, organization_id: int) -> None:
    """Drop the cached answer now and again after the current transaction commits.

    The second drop removes an answer another request cached from the rows as they were
    before the commit.
    """
    key = _active_model_key(organization_id)
    cache.delete(key)
    transaction.on_commit(lambda: cache.delete(key))


def model_version_previous(*, version: ModelVersion) -> ModelVersion | None:
    """The most recent earlier version that served and could serve again (for a roll back)."""
    return (
        ModelVersion.objects.filter(
            organization_id=version.organization_id,
            target=version.target,
            version__lt=version.version,
            status__in=[ModelStatus.RETIRED, ModelStatus.READY],
        )
        .exclude(artifact_sha256="")
        .order_by("-activated_at", "-version")
        .first()
    )


def _unclassified(
    *, organization: Organization, versions: list[ModelVersion], after_id: int
) -> QuerySet[Ticket]:
    missing = Q()
    for version in versions:
        missing |= Q(
            ~Exists(
                Prediction.objects.filter(ticket_id=OuterRef("pk"), model_version_id=version.pk)
            )
        )
    return Ticket.objects.filter(organization=organization, id__gt=after_id).filter(missing)


def ticket_ids_unclassified(
    *,
    organization: Organization,
    versions: list[ModelVersion],
    after_id: int = 0,
    limit: int | None = None,
) -> list[int]:
    """Ids (ascending, above `after_id`, at most `limit`) of the organization's tickets that
    lack a prediction from any of these versions."""
    if not versions:
        return []
    ids = (
        _unclassified(organization=organization, versions=versions, after_id=after_id)
        .order_by("id")
        .values_list("id", flat=True)
    )
    return list(ids if limit is None else ids[:limit])


def ticket_count_unclassified(
    *, organization: Organization, versions: list[ModelVersion], after_id: int = 0
) -> int:
    """How many of the organization's tickets above `after_id` lack one of these predictions."""
    if not versions:
        return 0
    return _unclassified(organization=organization, versions=versions, after_id=after_id).count()


def label_watermark(*, organization: Organization, target: str) -> dict[str, int]:
    """A cheap fingerprint of the organization's human labels for `target`.

    It moves when a labelled ticket is added or removed (count, highest id) or a person
    corrects a label (highest LabelChange id), which is what "new labels" means.
    """
    labelled = (
        Ticket.objects.filter(
            organization=organization, **{f"{target}_source__in": HUMAN_LABEL_SOURCES}
        )
        .exclude(**{target: ""})
        .aggregate(count=Count("id"), max_ticket_id=Max("id"))
    )
    changes = LabelChange.objects.filter(ticket__organization=organization, field=target).aggregate(
        max_label_change_id=Max("id")
    )
    return {
        "count": labelled["count"] or 0,
        "max_ticket_id": labelled["max_ticket_id"] or 0,
        "max_label_change_id": changes["max_label_change_id"] or 0,
    }


def model_version_last_trained(*, organization: Organization, target: str) -> ModelVersion | None:
    """The latest version whose training completed or is under way (failed ones do not count)."""
    return (
        ModelVersion.objects.filter(organization=organization, target=target)
        .exclude(status=ModelStatus.FAILED)
        .order_by("-version")
        .first()
    )


def targets_with_new_labels(*, organization: Organization) -> list[str]:
    """Targets whose human labels changed since the organization's last training of them."""
    changed = []
    for target in Target.values:
        watermark = label_watermark(organization=organization, target=target)
        if not watermark["count"]:
            continue
        last = model_version_last_trained(organization=organization, target=target)
        if last is None or last.label_watermark != watermark:
            changed.append(target)
    return changed


# Where the ticket API's prefetch (receivers.PREDICTIONS_PREFETCH) leaves a ticket's predictions.
PREFETCHED_PREDICTIONS = "prefetched_predictions"


def prediction_latest_by_target(*, ticket: Ticket) -> dict[str, Prediction]:
    """The newest prediction of each target (uses the API's prefetched predictions when present)."""
    predictions = getattr(ticket, PREFETCHED_PREDICTIONS, None)
    if predictions is None:
        predictions = ticket.predictions.all()
    latest: dict[str, Prediction] = {}
    for prediction in predictions:
        current = latest.get(prediction.target)
        # The newest row, not the highest version: after a roll back the older version speaks.
        if current is None or prediction.pk > current.pk:
            latest[prediction.target] = prediction
    return latest


# ------------------------------------------------------------------------------
# The review queue and live accuracy
# ------------------------------------------------------------------------------


def review_queue_for_user(*, user: Any, organization_id: int | None = None) -> QuerySet[Ticket]:
    """Tickets flagged for review in the user's organizations, most uncertain first.

    Uncertainty is `Ticket.review_margin`, the smallest margin between the top two classes
    among the applied predictions that flagged the ticket (set when they were made); the
    partial index `ticket_review_queue` holds the flagged tickets in that order, so a page
    of one organization's queue is read off the index whatever the queue's length.
    """
    org_ids = list(organization_list_for_user(user=user).values_list("pk", flat=True))
    if organization_id is not None:
        org_ids = [pk for pk in org_ids if pk == organization_id]
    # One organization as an equality: the index is then read in order, no sort.
    tenant = Q(organization_id=org_ids[0]) if len(org_ids) == 1 else Q(organization_id__in=org_ids)
    return (
        Ticket.objects.filter(tenant, needs_review=True)
        .select_related("organization")
        .order_by(F("review_margin").asc(nulls_last=True), "id")
    )


def _live_accuracy_sql(*, lateral: bool) -> str:
    """Reviewed and changed applied predictions per version, read from the people's changes.

    Driven from the label changes (a few per reviewed ticket), never from every prediction:
    each person's change finds the predictions it reviewed through the (ticket, target,
    model_version) index. On PostgreSQL a LATERAL subquery with OFFSET 0 (which keeps the
    planner from flattening it into a join) keeps it that way at any size (as a plain join
    the planner hashes all predictions: 0.4-0.7 s at 2M); SQLite's planner probes the index
    for the plain join.
    """
    prediction = connection.ops.quote_name(Prediction._meta.db_table)
    change = connection.ops.quote_name(LabelChange._meta.db_table)
    match = (
        "p.ticket_id = c.ticket_id AND p.target = c.field AND p.applied "
        "AND p.created_at <= c.changed_at AND p.model_version_id IN ({versions})"
    )
    if lateral:
        source = (
            f"{change} c CROSS JOIN LATERAL (SELECT p.id, p.model_version_id, p.label "  # noqa: S608
            f"FROM {prediction} p WHERE {match} OFFSET 0) p"
        )
    else:
        source = f"{change} c JOIN {prediction} p ON {match}"
    return (
        "SELECT p.model_version_id, COUNT(DISTINCT p.id), "  # noqa: S608
        "COUNT(DISTINCT CASE WHEN c.new_value <> p.label THEN p.id END) "
        f"FROM {source} WHERE c.changed_by_id IS NOT NULL AND c.changed_at >= %s "
        "GROUP BY p.model_version_id"
    )


def model_version_live_accuracy(
    *, versions: list[ModelVersion], lateral: bool | None = None, since: Any = None
) -> dict[int, dict[str, Any]]:
    """Per version: applied predictions a person reviewed, how many they changed, live accuracy.

    A prediction is reviewed when a person (not a bulk relabel) set that ticket's label after
    it was made (accepting it in the review queue or correcting it anywhere); it was changed
    when the label they set differs from the prediction. Live accuracy = 1 - changed/reviewed.
    Only reviews since `since` count (default: the last ZENITH_ML_LIVE_ACCURACY_DAYS), read
    through the index of people's changes by time.
    `lateral` picks the query's shape (default: LATERAL on PostgreSQL); tests run both.
    """
    if not versions:
        return {}
    if lateral is None:
        lateral = connection.vendor == "postgresql"
    ids = [version.pk for version in versions]
    if since is None:
        since = timezone.now() - timedelta(days=settings.ZENITH_ML_LIVE_ACCURACY_DAYS)
    sql = _live_accuracy_sql(lateral=lateral).format(versions=", ".join(["%s"] * len(ids)))
    with connection.cursor() as cursor:
        cursor.execute(sql, [*ids, since])
        rows = [
            {"model_version_id": version_id, "n": n, "n_changed": n_changed}
            for version_id, n, n_changed in cursor.fetchall()
        ]
    found = {row["model_version_id"]: row for row in rows}
    result = {}
    for version in versions:
        row = found.get(version.pk, {"n": 0, "n_changed": 0})
        reviewed, changed = row["n"], row["n_changed"]
        result[version.pk] = {
            "reviewed": reviewed,
            "changed": changed,
            "live_accuracy": None if not reviewed else round(1 - changed / reviewed, 4),
            "offline_accuracy": version.accuracy,
        }
    return result


def model_versions_active_live_accuracy(*, organization: Organization) -> list[dict[str, Any]]:
    """Live beside offline accuracy of each serving version of the organization, by target."""
    versions = list(
        ModelVersion.objects.filter(organization=organization, status=ModelStatus.ACTIVE).order_by(
            "target"
        )
    )
    live = model_version_live_accuracy(versions=versions)
    return [
        {"target": version.target, "version": version.version, "model_version_id": version.pk}
        | live[version.pk]
        for version in versions
    ]
