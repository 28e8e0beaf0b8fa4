"""Organization-wide syncs by source, behind the shared sync tasks.

Each entry names a service ``(*, organization, on_progress=None) -> dict`` that syncs every
configured account of that source for one organization and returns a JSON summary; it
raises ``taskops.base.TransientError`` when a retry later may succeed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from taskops.base import TransientError
from tickets.models import Organization

SYNC_SOURCES: dict[str, str] = {
    "slack": "integrations.slack_services.slack_sync_organization_summary",
    "email": "integrations.email_services.email_sync_organization_summary",
}

ProgressCallback = Callable[[int, int, str], None]


class UnknownSyncSource(ValueError):
    """A sync was asked for a source no integration provides."""


def sync_source_service(source: str) -> Callable[..., dict[str, Any]]:
    """The sync service of ``source``."""
    try:
        path = SYNC_SOURCES[source]
    except KeyError:
        known = ", ".join(sorted(SYNC_SOURCES))
        raise UnknownSyncSource(f"unknown sync source {source!r} (known: {known})") from None
    service: Callable[..., dict[str, Any]] = import_string(path)
    return service


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
