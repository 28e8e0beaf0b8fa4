"""Organization-wide syncs by source, behind the shared sync tasks and `manage.py sync_*`.

Each entry names, as dotted paths imported on use:
- ``service`` ``(*, organization, on_progress=None) -> dict``: syncs every configured account
  of that source for one organization and returns a JSON summary; it raises
  ``taskops.base.TransientError`` when a retry later may succeed;
- ``organizations`` ``() -> QuerySet[Organization]``: the organizations with something to sync;
- ``enqueue`` ``(*, organization, triggered_by) -> str``: enqueues a sync of one organization
  (after commit) and returns the task id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.utils.module_loading import import_string

from taskops.base import TransientError
from taskops.progress import ProgressCallback
from taskops.services import task_enqueue
from tickets.models import Organization

SYNC_ORGANIZATION_TASK = "integrations.tasks.sync_organization_data"


@dataclass(frozen=True)
class SyncSource:
    service: str
    organizations: str
    enqueue: str


SYNC_SOURCES: dict[str, SyncSource] = {
    "slack": SyncSource(
        service="integrations.slack.services.slack_sync_organization_summary",
        organizations="integrations.slack.selectors.slack_organizations_to_sync",
        enqueue="integrations.slack.services.slack_sync_enqueue",
    ),
    "email": SyncSource(
        service="integrations.email.services.email_sync_organization_summary",
        organizations="integrations.email.selectors.organizations_with_mailboxes",
        enqueue="integrations.email.services.email_sync_enqueue",
    ),
}


class UnknownSyncSource(ValueError):
    """A sync was asked for a source no integration provides."""


def sync_source_get(source: str) -> SyncSource:
    """The registry entry of ``source``."""
    try:
        return SYNC_SOURCES[source]
    except KeyError:
        known = ", ".join(sorted(SYNC_SOURCES))
        raise UnknownSyncSource(f"unknown sync source {source!r} (known: {known})") from None


def sync_source_service(source: str) -> Callable[..., dict[str, Any]]:
    """The sync service of ``source``."""
    service: Callable[..., dict[str, Any]] = import_string(sync_source_get(source).service)
    return service


def sync_source_organizations(source: str) -> QuerySet[Organization]:
    """The organizations with something of ``source`` to sync, by slug."""
    organizations: QuerySet[Organization] = import_string(sync_source_get(source).organizations)()
    return organizations.order_by("slug")


def sync_source_enqueue(*, source: str, organization: Organization, triggered_by: str) -> str:
    """Enqueue a sync of ``source`` for one organization (after commit); returns the task id."""
    enqueue: Callable[..., str] = import_string(sync_source_get(source).enqueue)
    return enqueue(organization=organization, triggered_by=triggered_by)


def organizations_to_sync(*, sources: list[str] | None = None) -> QuerySet[Organization]:
    """The organizations with something of any of `sources` (all by default) to sync, by slug."""
    ids: set[int] = set()
    for source in sources or list(SYNC_SOURCES):
        ids.update(sync_source_organizations(source).values_list("pk", flat=True))
    return Organization.objects.filter(pk__in=ids).order_by("slug")


def organization_sync_enqueue(
    *, organization: Organization, triggered_by: str, sources: list[str] | None = None
) -> str:
    """Enqueue sync_organization_data for one organization (after commit); the task id."""
    kwargs: dict[str, Any] = {"organization_id": organization.pk}
    if sources:
        for source in sources:
            sync_source_get(source)
        kwargs["sources"] = list(sources)
    return task_enqueue(name=SYNC_ORGANIZATION_TASK, kwargs=kwargs, triggered_by=triggered_by)


def organization_sync(
    *,
    organization: Organization,
    sources: list[str] | None = None,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Sync the given sources (all by default) of an organization, one after the other.

    A failing source does not stop the others; afterwards the first failure is raised
    (a transient one last, so a retry only happens when nothing else is wrong).
    """
    services = {source: sync_source_service(source) for source in sources or list(SYNC_SOURCES)}
    results: dict[str, Any] = {}
    failures: list[Exception] = []
    for source, service in services.items():
        try:
            results[source] = service(organization=organization, on_progress=on_progress)
        except Exception as exc:
            failures.append(exc)
            results[source] = {"error": str(exc)}
    if failures:
        permanent = [exc for exc in failures if not isinstance(exc, TransientError)]
        raise (permanent or failures)[0]
    return results
