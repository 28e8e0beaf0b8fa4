"""Liveness and readiness probes for orchestrators: GET /healthz and GET /readyz.

A middleware, first in MIDDLEWARE, answers the two paths before anything reads the Host
header: a container healthcheck or a load balancer asks by IP address or an internal name
that DJANGO_ALLOWED_HOSTS need not list (Django would answer 400 DisallowedHost). No login.

- /healthz: the process serves requests. 200 {"status": "ok"}.
- /readyz: the database answers a query and the broker accepts a connection.
  200 {"status": "ok", ...} or 503 {"status": "unavailable", ...}, each check only
  "ok" or "unavailable": no host names, PIDs, queue names or error texts
  (the staff-only GET /api/v1/tasks/health names causes; the logs carry the error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
# Seconds the broker may take to accept a connection before the probe calls it unavailable.
BROKER_TIMEOUT = 2.0


def database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:  # any driver error: not ready; the cause goes to the log only
        logger.warning("readyz: database unavailable", exc_info=True)
        return False
    return True


def broker_ready() -> bool:
    from zenith.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT
            )
            # Connecting is lazy on some transports: one round trip proves the broker answers.
            conn.default_channel  # noqa: B018
    except Exception:  # kombu raises transport-specific errors; the cause goes to the log only
        logger.warning("readyz: broker unavailable", exc_info=True)
        return False
    return True


def _answer(request: HttpRequest, status: int, body: dict[str, object]) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        response: HttpResponse = JsonResponse({"detail": "Method not allowed."}, status=405)
        response["Allow"] = "GET, HEAD"
    else:
        response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    return response


def probe_response(request: HttpRequest) -> HttpResponse | None:
    path = request.path_info.rstrip("/") or "/"
    if path == LIVENESS_PATH:
        return _answer(request, 200, {"status": "ok"})
    if path == READINESS_PATH:
        if request.method not in ("GET", "HEAD"):
            return _answer(request, 405, {})
        checks = {
            "database": "ok" if database_ready() else "unavailable",
            "broker": "ok" if broker_ready() else "unavailable",
        }
        ready = all(state == "ok" for state in checks.values())
        body = {"status": "ok" if ready else "unavailable", "checks": checks}
        return _answer(request, 200 if ready else 503, body)
    return None


class ProbeMiddleware:
    """Answers /healthz and /readyz ahead of host validation, sessions and auth."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return probe_response(request) or self.get_response(request)
