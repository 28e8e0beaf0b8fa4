"""What the ticket API shows about an e-mail ticket (a ``ticket_output_extensions`` hook)."""

from __future__ import annotations

from typing import Any

from integrations.email.parsing import TRUNCATED_MARKER
from tickets.models import Source, Ticket

# Prefetched with every ticket list, so the hook below costs no query per ticket.
OUTPUT_PREFETCHES = ("email_attachments",)


def ticket_output(ticket: Ticket) -> dict[str, Any]:
    """``{"email": {...}}`` for tickets that came from e-mail, nothing for the others.

    Attachments of the ticket and of its e-mail follow-ups are listed with their name,
    type and size; ``stored`` is false for one over ZENITH_MAX_ATTACHMENT_BYTES.
    """
    if ticket.source != Source.EMAIL:
        return {}
    # The external id is the Message-ID, or a content digest for mail that had none.
    message_id = ticket.external_id if ticket.external_id.startswith("<") else None
    return {
        "email": {
            "message_id": message_id,
            # The body was cut at ZENITH_MAX_BODY_CHARS; it ends with a "truncated" marker.
            "body_truncated": ticket.body.endswith(TRUNCATED_MARKER),
            "attachments": [
                {
                    "id": attachment.pk,
                    "filename": attachment.filename,
                    "content_type": attachment.content_type,
                    "size": attachment.size,
                    "stored": attachment.stored,
                    "skipped_reason": attachment.skipped_reason,
                }
                for attachment in ticket.email_attachments.all()  # type: ignore[attr-defined]
            ],
        }
    }
