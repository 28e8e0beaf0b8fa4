"""Role checks shared by every app's API: viewer reads, operator acts, admin configures."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from tickets.models import Organization, Role
from tickets.selectors import membership_has_role


def require_role(*, user: Any, organization: Organization | int, role: Role) -> None:
    """Raise 403 unless the user holds `role` in the organization."""
    if not membership_has_role(user=user, organization=organization, role=role):
        raise PermissionDenied(f"this needs the {role.value} role in the organization")


def require_role_of_members(*, user: Any, organization_id: Any, role: Role) -> None:
    """Before a create: a member of the organization below `role` gets 403.

    `organization_id` is the raw request value. An outsider, an id of no organization or
    no id at all passes, so the input serializer answers 400 ("does not exist") and never
    tells whether another organization exists.
    """
    if isinstance(organization_id, str) and organization_id.isdigit():
        organization_id = int(organization_id)
    if isinstance(organization_id, int) and membership_has_role(
        user=user, organization=organization_id, role=Role.VIEWER
    ):
        require_role(user=user, organization=organization_id, role=role)


def organization_for_role(*, user: Any, organization_id: int, role: Role) -> Organization:
    """The organization if the user may act on it with `role`: 404 when not theirs, 403 below."""
    organization = Organization.objects.filter(pk=organization_id).first()
    if organization is None or not membership_has_role(
        user=user, organization=organization, role=Role.VIEWER
    ):
        raise Http404("no such organization")
    require_role(user=user, organization=organization, role=role)
    return organization


class OrganizationRolePermission(BasePermission):
    """Object permission: reads need viewer, writes need the view's `write_role`.

    The object must expose `organization_id` (directly or via `get_organization_id`).
    Visibility itself is handled by scoped querysets, so what is not visible is 404.
    """

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        role = (
            Role.VIEWER
            if request.method in SAFE_METHODS
            else getattr(view, "write_role", Role.OPERATOR)
        )
        org_id = (
            obj.get_organization_id()
            if hasattr(obj, "get_organization_id")
            else obj.organization_id
        )
        require_role(user=request.user, organization=org_id, role=role)
        return True
