"""Serializers shared by every integration."""

from __future__ import annotations

from rest_framework import serializers


class SyncTriggerInputSerializer(serializers.Serializer):
    organization_id = serializers.IntegerField(min_value=1)
