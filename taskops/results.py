"""The result backend: django-celery-results' database backend that rides out a DB restart.

django-celery-results retries only InterfaceError ("connection already closed"). A
restarting PostgreSQL raises OperationalError (refused, shutting down, terminated), and a
result write that fails outside the task body leaves the result row behind the task. This
backend treats those as transient too, drops the broken connection, and lets Celery's
result_backend_always_retry back off until the database is back.
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError, close_old_connections
from django_celery_results.backends.database import DatabaseBackend


class ResultBackend(DatabaseBackend):
    def exception_safe_to_retry(self, exc: Exception) -> bool:
        if isinstance(exc, InterfaceError | OperationalError):
            close_old_connections()
            return True
        return False
