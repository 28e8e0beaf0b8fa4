"""Reads of the core: organizations a user may see, roles and tickets."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from tickets.models import ROLE_RANK, Membership, Organization, Role, Ticket


def organization_list_for_user(
    *, user: Any, min_role: Role = Role.VIEWER
) -> QuerySet[Organization]:
    """Organizations the user belongs to with at least `min_role` (all for superusers)."""
    if not user or not user.is_authenticated:
        return Organization.objects.none()
    if user.is_superuser:
        return Organization.objects.all()
    roles = [role for role, rank in ROLE_RANK.items() if rank >= ROLE_RANK[min_role]]
    return Organization.objects.filter(
        memberships__user=user, memberships__role__in=roles
    ).distinct()


def organization_ids_administered_by(*, user: Any) -> list[int]:
    """Ids of the organizations where the user holds the admin role (not all for superusers)."""
    if not user or not user.is_authenticated:
        return []
    return list(
        Membership.objects.filter(user=user, role=Role.ADMIN).values_list(
            "organization_id", flat=True
        )
    )


def membership_has_role(*, user: Any, organization: Organization | int, role: Role) -> bool:
    """Whether the user holds `role` (or a higher one) in the organization."""
    if not user or not user.is_authenticated:
        return False
    if user.is_superuser:
        return True
    org_id = organization if isinstance(organization, int) else organization.pk
    membership = Membership.objects.filter(user=user, organization_id=org_id).first()
    return membership is not None and ROLE_RANK[Role(membership.role)] >= ROLE_RANK[role]


def ticket_list(*, organization: Organization) -> QuerySet[Ticket]:
    """An organization's tickets, newest first."""
    return Ticket.objects.filter(organization=organization).select_related("organization")


def ticket_list_for_user(*, user: Any) -> QuerySet[Ticket]:
    """Tickets of every organization the user may see."""
    tickets = Ticket.objects.select_related("organization")
    if user and user.is_authenticated and user.is_superuser:
        return tickets.all()
    # The ids first, then an equality (or a short IN list) on organization_id: the planner
    # reads the (organization, ...) indexes in order. Behind a subquery it cannot tell
    # which organization it gets, and scans the newest tickets of everyone instead.
    org_ids = list(organization_list_for_user(user=user).values_list("pk", flat=True))
    if len(org_ids) == 1:
        return tickets.filter(organization_id=org_ids[0])
    return tickets.filter(organization_id__in=org_ids)


def ticket_training_examples(
    *, organization: Organization, target: str
) -> list[tuple[int, str, str]]:
    """(ticket id, text, label) for tickets whose `target` label came from a person or an import."""
    source_field = f"{target}_source"
    rows = (
        Ticket.objects.filter(organization=organization)
        .filter(**{f"{source_field}__in": ["person", "import"]})
        .exclude(**{target: ""})
        .order_by("id")
        .values_list("id", "subject", "body", target)
    )
    return [(pk, f"{subject} {body}".strip(), label) for pk, subject, body, label in rows]


def ticket_labels_known(*, organization: Organization, field: str) -> list[str]:
    """Every value the organization's tickets have in the label `field`, sorted."""
    return sorted(
        Ticket.objects.filter(organization=organization)
        .exclude(**{field: ""})
        .order_by()
        .values_list(field, flat=True)
        .distinct()
    )
