"""The beat scheduler: django-celery-beat's DatabaseScheduler that only sends while it leads.

Every beat process competes for one lease row (taskops.models.SchedulerLease). The holder
renews it on each tick and sends due schedules; any other beat stays on standby, checking
the lease, and takes over once the holder stops renewing it (crash, shutdown). A lease row
works the same on PostgreSQL and SQLite, unlike an advisory lock that lives and dies with
one database session. Schedule edits in the admin reach the holder through
DatabaseScheduler's change tracking, without a restart.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import uuid
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError
from django_celery_beat.schedulers import DatabaseScheduler

from taskops import services

logger = logging.getLogger(__name__)

LEASE_NAME = "beat"


class LeaderDatabaseScheduler(DatabaseScheduler):
    """DatabaseScheduler that ticks only while it holds the beat lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lease_holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.is_leader = False
        super().__init__(*args, **kwargs)
        # Write last_run_at after every send, so a standby that takes over knows
        # what was already sent and sends no tick twice.
        self.sync_every_tasks = 1

    @property
    def lease_seconds(self) -> float:
        return float(settings.ZENITH_BEAT_LEASE_SECONDS)

    def _hold_lease(self) -> bool:
        try:
            held = services.scheduler_lease_acquire(
                name=LEASE_NAME, holder=self.lease_holder, seconds=self.lease_seconds
            )
        except (DatabaseError, InterfaceError):
            logger.warning("beat: cannot reach the database to renew the lease", exc_info=True)
            return False
        if held and not self.is_leader:
            logger.info("beat: %s holds the lease and sends schedules", self.lease_holder)
            self._reload_schedule()
        elif not held and self.is_leader:
            logger.warning("beat: %s lost the lease; standing by", self.lease_holder)
        elif not held:
            logger.debug("beat: another beat holds the lease; standing by")
        self.is_leader = held
        return held

    def _reload_schedule(self) -> None:
        """Read every entry again, with last_run_at as the previous holder left it."""
        self._dirty.clear()
        self._schedule = self.all_as_schedule()
        self._last_full_sync = datetime.datetime.now()  # noqa: DTZ005 - as DatabaseScheduler
        self._heap = None

    def reserve(self, entry: Any) -> Any:
        # DatabaseScheduler keeps the pre-send entry in self._schedule (only the heap gets
        # the advanced one). Whenever the heap is rebuilt from self._schedule, as after a
        # schedule change seen on the tick that became leader, that stale entry is due
        # again and the tick was sent twice, milliseconds apart. Keep the schedule current.
        new_entry = super().reserve(entry)
        if self._schedule is not None and new_entry.name in self._schedule:
            self._schedule[new_entry.name] = new_entry
        return new_entry

    def tick(self, *args: Any, **kwargs: Any) -> float:
        # Check again well within the lease, so the holder never lets it lapse while alive
        # and a standby notices a dead holder soon after the lease runs out.
        recheck = max(0.1, self.lease_seconds / 3)
        if not self._hold_lease():
            return min(recheck, self.max_interval)
        return min(super().tick(*args, **kwargs), recheck)

    def close(self) -> None:
        super().close()
        if self.is_leader:
            try:
                services.scheduler_lease_release(name=LEASE_NAME, holder=self.lease_holder)
            except (DatabaseError, InterfaceError):
                logger.warning("beat: could not release the lease", exc_info=True)
            self.is_leader = False
