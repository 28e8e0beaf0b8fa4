"""Finding the real services tests use, and what to do when one is missing."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.db import connection

TEST_REDIS_URL = "redis://127.0.0.1:6379/15"


def services_required() -> bool:
    """Whether a missing service fails the run (CI) rather than skipping the test."""
    return os.environ.get("ZENITH_REQUIRE_SERVICES", "") == "1"


def missing(what: str) -> None:
    """Skip the test, or fail it when services are required."""
    message = f"{what} is not available"
    if services_required():
        pytest.fail(f"{message} and ZENITH_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def redis_url() -> str:
    """The Redis URL tests use: the configured broker's when it is Redis."""
    broker = settings.CELERY_BROKER_URL
    if broker.startswith("redis://"):
        return broker
    return os.environ.get("ZENITH_TEST_REDIS_URL", TEST_REDIS_URL)


def redis_available(url: str | None = None) -> bool:
    parsed = urlparse(url or redis_url())
    return port_open(parsed.hostname or "127.0.0.1", parsed.port or 6379)


def database_url() -> str:
    """A URL for the current (test) database that worker processes can connect to."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgresql://{auth}{host}:{port}/{params['NAME']}"
