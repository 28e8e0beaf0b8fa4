"""Operational records of the task system."""

from django.db import models


class Heartbeat(models.Model):
    """The last time a periodic component (beat, via health_check_tasks) showed it was alive."""

    name = models.CharField(max_length=100, unique=True)
    last_seen = models.DateTimeField()
    details = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_seen:%Y-%m-%d %H:%M:%S}"
