"""Helpers shared by the mlmodels management commands."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db.models import QuerySet

from tickets.models import Organization


def organizations_for(slug: str | None) -> QuerySet[Organization]:
    """The organization named by --org, or all of them; an unknown slug is an error."""
    if slug is None:
        return Organization.objects.order_by("slug")
    organizations = Organization.objects.filter(slug=slug)
    if not organizations.exists():
        raise CommandError(f"no organization with slug {slug!r}")
    return organizations
