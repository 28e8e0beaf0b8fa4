"""E-mail reads: mailboxes and the inbound ledger, scoped to an organization or a user."""

from __future__ import annotations

from typing import Any

from django.db.models import BooleanField, ExpressionWrapper, Max, Q, QuerySet
from django.utils import timezone

from integrations.models import (
    INBOUND_ORIGINAL_STATES,
    InboundEmail,
    InboundEmailState,
    Mailbox,
    MailboxAuthMethod,
    OAuthStatus,
)
from tickets.models import Organization, Role
from tickets.selectors import organization_list_for_user


def _mailboxes() -> QuerySet[Mailbox]:
    """Mailboxes whose password is only decrypted when it is used.

    A password no configured key decrypts (a key dropped too early) then breaks only
    the poll of that mailbox, which records the error, not every page that lists it.
    """
    return (
        Mailbox.objects.select_related("organization")
        .defer("password")
        .annotate(password_set=ExpressionWrapper(~Q(password=""), output_field=BooleanField()))
    )


def mailbox_has_password(*, mailbox: Mailbox) -> bool:
    """Whether a password is stored, without decrypting it when the selector told us."""
    known = getattr(mailbox, "password_set", None)
    return bool(mailbox.password) if known is None else bool(known)


def mailbox_list_for_user(*, user: Any, min_role: Role = Role.ADMIN) -> QuerySet[Mailbox]:
    """Mailboxes of organizations where the user holds ``min_role`` (admins configure them)."""
    return _mailboxes().filter(
        organization__in=organization_list_for_user(user=user, min_role=min_role)
    )


def mailbox_list(
    *, organization: Organization | None, enabled: bool | None = None, pollable: bool = False
) -> QuerySet[Mailbox]:
    """An organization's mailboxes (every organization's with None), oldest first.

    ``pollable`` leaves out OAuth2 mailboxes waiting for an admin's (new) consent.
    """
    mailboxes = _mailboxes().order_by("organization_id", "pk")
    if organization is not None:
        mailboxes = mailboxes.filter(organization=organization)
    if enabled is not None:
        mailboxes = mailboxes.filter(enabled=enabled)
    if pollable:
        mailboxes = mailboxes.exclude(
            auth_method=MailboxAuthMethod.OAUTH2, oauth_status__in=["", OAuthStatus.NEEDS_CONSENT]
        )
    return mailboxes


def mailbox_get(*, mailbox_id: int, organization_id: int | None = None) -> Mailbox | None:
    """One mailbox, or None when it is gone (or belongs to another organization)."""
    mailboxes = _mailboxes().filter(pk=mailbox_id)
    if organization_id is not None:
        mailboxes = mailboxes.filter(organization_id=organization_id)
    return mailboxes.first()


def mailbox_has_ingested(*, mailbox: Mailbox) -> bool:
    """Whether any mail of this mailbox is in the ledger."""
    return InboundEmail.objects.filter(mailbox=mailbox).exists()


def mailbox_sync_in_progress(*, mailbox: Mailbox) -> bool:
    """Whether a poll holds the mailbox's lease right now."""
    expires = mailbox.sync_lease_expires_at
    return bool(mailbox.sync_lease_owner) and expires is not None and expires > timezone.now()


def organizations_with_mailboxes() -> QuerySet[Organization]:
    """Organizations with at least one enabled mailbox."""
    return Organization.objects.filter(mailboxes__enabled=True).distinct().order_by("slug")


def inbound_email_list_for_user(
    *, user: Any, min_role: Role = Role.ADMIN
) -> QuerySet[InboundEmail]:
    """Ledger rows of the mailboxes of organizations where the user holds ``min_role``."""
    return (
        InboundEmail.objects.filter(
            organization__in=organization_list_for_user(user=user, min_role=min_role)
        )
        .select_related("organization", "mailbox")
        .order_by("-received_at", "-pk")
    )


def inbound_email_by_keys(
    *, organization_id: int, message_keys: list[str]
) -> dict[str, dict[str, Any]]:
    """Earlier ledger rows holding these Message-ID keys in the organization, by key.

    Only rows that matter for a new copy: the ingested original (ticket or follow-up,
    preferred) or any row pointing at a ticket. Values: state, ticket_id, mailbox_id,
    uidvalidity, uid.
    """
    if not message_keys:
        return {}
    rows = (
        InboundEmail.objects.filter(organization_id=organization_id, message_key__in=message_keys)
        .filter(Q(state__in=INBOUND_ORIGINAL_STATES) | Q(ticket__isnull=False))
        .values("message_key", "state", "ticket_id", "mailbox_id", "uidvalidity", "uid")
    )
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        known = found.get(row["message_key"])
        if known is None or (
            row["state"] in INBOUND_ORIGINAL_STATES
            and known["state"] not in INBOUND_ORIGINAL_STATES
        ):
            found[row["message_key"]] = dict(row)
    return found


def inbound_email_last_uid(*, mailbox: Mailbox, uidvalidity: int) -> int:
    """The mailbox's cursor: the highest UID with a ledger row under this UIDVALIDITY (0: none)."""
    return (
        InboundEmail.objects.filter(mailbox=mailbox, uidvalidity=uidvalidity).aggregate(
            last=Max("uid")
        )["last"]
        or 0
    )


def inbound_email_unflagged_uids(*, mailbox: Mailbox, uidvalidity: int) -> list[int]:
    """UIDs committed under this UIDVALIDITY but not yet marked \\Seen or moved on the server.

    Rejected and too-large mail is left unread on purpose, for a person to look at.
    """
    return list(
        InboundEmail.objects.filter(
            Q(mailbox=mailbox, uidvalidity=uidvalidity, flagged_at__isnull=True)
            & ~Q(state__in=[InboundEmailState.REJECTED, InboundEmailState.TOO_LARGE])
        )
        .order_by("uid")
        .values_list("uid", flat=True)
    )


def inbound_email_list(
    *, organization: Organization, mailbox: Mailbox | None = None, state: str | None = None
) -> QuerySet[InboundEmail]:
    """An organization's ledger rows, newest first."""
    rows = InboundEmail.objects.filter(organization=organization).select_related(
        "mailbox", "ticket"
    )
    if mailbox is not None:
        rows = rows.filter(mailbox=mailbox)
    if state is not None:
        rows = rows.filter(state=state)
    return rows
