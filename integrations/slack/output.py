"""What the ticket API shows about a ticket's Slack origin (a ``ticket_output_extensions`` hook)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist

from tickets.models import Source, Ticket

# The relations ``ticket_output`` reads, prefetched by the ticket list.
OUTPUT_PREFETCHES = ("slack_origin",)


def ticket_output(ticket: Ticket) -> dict[str, Any]:
    """``{"slack": {...}}`` for tickets that came from Slack, nothing for the others."""
    if ticket.source != Source.SLACK:
        return {}
    try:
        origin = ticket.slack_origin  # type: ignore[attr-defined]
    except ObjectDoesNotExist:
        return {"slack": None}
    return {
        "slack": {
            "team_id": origin.team_id,
            "channel_id": origin.channel_id,
            "ts": origin.ts,
            "edited": bool(origin.revisions),
            "revisions": origin.revisions,
            "deleted_at": origin.deleted_at,
        }
    }
