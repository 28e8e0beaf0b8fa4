"""API wiring shared by every app: error bodies that always say what went wrong."""

from __future__ import annotations

import logging
from typing import Any

from kombu.exceptions import OperationalError as BrokerError
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus 503 with a message when the broker cannot take a task."""
    if isinstance(exc, BrokerError):
        logger.warning("broker unavailable: %s", exc)
        return Response(
            {"detail": f"the task queue is unavailable, try again later ({exc})"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    return drf_exception_handler(exc, context)


class APIRootView(APIView):
    """Zenith API v1: follow a link to browse it (token or session auth).

    The links are built from the routers of the apps' URL modules, so a viewset an app
    registers appears here without a hand-kept list.
    """

    permission_classes = [AllowAny]
    schema = None
    routers: tuple[SimpleRouter, ...] = ()
    extra_entries: dict[str, str] = {}

    def get(self, request: Request) -> Response:
        entries = {
            prefix: f"{prefix}/" for router in self.routers for prefix, _, _ in router.registry
        }
        entries.update(self.extra_entries)
        return Response({name: request.build_absolute_uri(path) for name, path in entries.items()})
