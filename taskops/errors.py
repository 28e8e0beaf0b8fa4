"""The one transient-error model: an exception that subclasses ``TransientError`` may pass.

Kept free of Django and Celery so I/O clients (integrations' Slack and IMAP clients) can
mark their own errors transient without importing the ORM. ``ZenithTask`` retries these
(after 60, 120 and 180 s); anything else is bad data and fails at once.
"""

from __future__ import annotations


class TransientError(Exception):
    """An error that may pass (network, rate limit, lock timeout): the task is retried."""
