"""How tasks/health decides that beat is alive: its heartbeat, or a beat renewing the lease."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from taskops import health, services
from taskops.models import Heartbeat

pytestmark = pytest.mark.django_db


def test_without_heartbeat_or_lease_beat_is_down():
    beat = health.check_beat()

    assert beat["ok"] is False
    assert "is beat running" in beat["error"]


def test_a_fresh_heartbeat_means_beat_is_up():
    services.heartbeat_record(name="beat")

    beat = health.check_beat()

    assert beat["ok"] is True
    assert beat["age_seconds"] < 5


def test_a_stale_heartbeat_is_down_unless_a_beat_holds_the_lease(settings):
    settings.ZENITH_BEAT_HEARTBEAT_MAX_AGE = 180
    services.heartbeat_record(name="beat")
    Heartbeat.objects.update(last_seen=timezone.now() - timedelta(minutes=4))

    stale = health.check_beat()
    assert stale["ok"] is False
    assert "last heartbeat 240s ago" in stale["error"]

    services.scheduler_lease_acquire(name="beat", holder="host:1:ab", seconds=30)
    assert health.check_beat()["ok"] is True

    services.scheduler_lease_release(name="beat", holder="host:1:ab")
    assert health.check_beat()["ok"] is False
