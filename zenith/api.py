"""API wiring shared by every app: error bodies that always say what went wrong.

One convention for every error under /api/ and on /metrics: a JSON object with "detail"
(a sentence) and the right status; a 400 adds a map of field -> messages. DRF views get it
from `exception_handler`; everything else (unknown URLs, plain Django views, Slack's
endpoint, uncaught exceptions) from `APIErrorMiddleware`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from kombu.exceptions import OperationalError as BrokerError
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus 503 with a message when the broker cannot take a task.

    The publish already retried for ZENITH_PUBLISH_RETRY_SECONDS (a failover usually ends
    within it); Retry-After tells the client when trying again is worth it.
    """
    if isinstance(exc, BrokerError):
        logger.warning("broker unavailable: %s", exc)
        return Response(
            {"detail": f"the task queue is unavailable, try again later ({exc})"},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(settings.ZENITH_BROKER_RETRY_AFTER)},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = validation_body(response.data)
    elif not isinstance(response.data, dict) or "detail" not in response.data:
        response.data = {"detail": response.data}
    return response


def validation_body(errors: Any) -> dict[str, Any]:
    """A 400's body: {"detail": "field: message; ...", field: [messages], ...}."""
    if not isinstance(errors, dict):
        return {"detail": "; ".join(str(item) for item in _flat(errors)) or "invalid input"}
    fields = {
        key: value for key, value in errors.items() if key not in ("detail", "non_field_errors")
    }
    general = [
        str(item) for key in ("detail", "non_field_errors") for item in _flat(errors.get(key))
    ]
    parts = general + [f"{path}: {text}" for path, text in _paths(fields)]
    return {"detail": "; ".join(parts[:10]) or "invalid input", **fields}


def _flat(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [item for element in value for item in _flat(element)]
    if isinstance(value, dict):
        return [item for element in value.values() for item in _flat(element)]
    return [value]


def _paths(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted field path, message) for every message in a DRF error structure."""
    if isinstance(value, dict):
        return [
            pair
            for key, item in value.items()
            for pair in _paths(item, f"{prefix}.{key}" if prefix else str(key))
        ]
    if isinstance(value, list | tuple):
        return [pair for item in value for pair in _paths(item, prefix)]
    return [(prefix, str(value))]


# Headers an error keeps when its body is rewritten.
_KEPT_HEADERS = ("WWW-Authenticate", "Allow", "Retry-After")
API_PREFIXES = ("/api/", "/metrics")


class NulQueryMiddleware:
    """A query parameter holding a NUL character is refused with 400 naming it.

    PostgreSQL stores no NUL, so such a value reaching a lookup (an admin list's
    ``?state__exact=``, an API filter) fails the query: a 500 for bad input. Request bodies
    are left to the forms and serializers, which refuse NUL themselves.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        for name, values in request.GET.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                shown = name.replace("\x00", "\\x00")[:100]
                message = "a NUL character is not allowed in a query parameter"
                if request.path.startswith(API_PREFIXES):
                    return JsonResponse(
                        {"detail": f"{shown}: {message}", shown: [message]}, status=400
                    )
                return HttpResponse(f"{shown}: {message}", status=400, content_type="text/plain")
        return self.get_response(request)


class APIErrorMiddleware:
    """Errors under /api/ and on /metrics are JSON {"detail": ...}, whoever answered them."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code < 400 or not request.path.startswith(API_PREFIXES):
            return response
        if getattr(response, "streaming", False) or getattr(response, "human_page", False):
            # Streams, and pages a browser is sent to (OAuth callbacks), are left as they are.
            return response
        detail = _detail_of(response)
        if detail is None:
            return response  # already {"detail": ...}
        rewritten = JsonResponse({"detail": detail}, status=response.status_code)
        for header in _KEPT_HEADERS:
            if header in response:
                rewritten[header] = response[header]
        return rewritten

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """An exception a non-DRF view let out: its status, never an HTML page."""
        if not request.path.startswith(API_PREFIXES):
            return None
        if isinstance(exception, Http404):
            return JsonResponse({"detail": str(exception) or "not found"}, status=404)
        if isinstance(exception, PermissionDenied):
            return JsonResponse({"detail": str(exception) or "permission denied"}, status=403)
        if isinstance(exception, BadRequest | SuspiciousOperation):
            return JsonResponse({"detail": str(exception) or "bad request"}, status=400)
        if isinstance(exception, BrokerError):
            logger.warning("broker unavailable: %s", exception)
            response = JsonResponse(
                {"detail": f"the task queue is unavailable, try again later ({exception})"},
                status=503,
            )
            response["Retry-After"] = str(settings.ZENITH_BROKER_RETRY_AFTER)
            return response
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return JsonResponse({"detail": "internal server error"}, status=500)


def _detail_of(response: HttpResponse) -> str | None:
    """None when the body is already {"detail": ...}, else the sentence to put there."""
    reason = response.reason_phrase or "error"
    if "json" not in response.get("Content-Type", ""):
        return reason.lower() if response.status_code != 404 else "not found"
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return reason.lower()
    if isinstance(body, dict):
        if "detail" in body:
            return None
        for key in ("error", "message"):
            if isinstance(body.get(key), str):
                return body[key]
    return reason.lower()


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
