"""Zenith project package: settings, the Celery app and URLs."""

from zenith.celery import app as celery_app

__all__ = ("celery_app",)
