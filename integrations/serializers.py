"""Serializers shared by every integration."""

from __future__ import annotations

from rest_framework import serializers

from integrations.sync import SYNC_SOURCES
from tickets.serializers import StrictInputSerializer


class SyncTriggerInputSerializer(serializers.Serializer):
    organization_id = serializers.IntegerField(min_value=1)


class SyncAllInputSerializer(StrictInputSerializer):
    sources = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(SYNC_SOURCES)),
        required=False,
        allow_empty=False,
        max_length=len(SYNC_SOURCES),
        help_text="sources to sync (default: all)",
    )


class SyncOrganizationInputSerializer(SyncAllInputSerializer):
    organization_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
