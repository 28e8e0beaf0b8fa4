"""Signals other apps listen to; the core sends them and knows no listener."""

from django.dispatch import Signal

# Sent after commit with organization_id, ticket_ids and source.
tickets_created = Signal()
