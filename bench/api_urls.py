"""Zenith's URLs plus `bench/plain-tickets/`: the same page of tickets from a bare Django view.

Used only by bench/bench_api.py (through bench/settings_api.py); never mounted in production.
"""

from django.http import HttpRequest, JsonResponse
from django.urls import path
from rest_framework.authtoken.models import Token

from tickets.models import Ticket
from tickets.serializers import TicketOutputSerializer
from zenith.urls import urlpatterns as zenith_urlpatterns

PAGE_SIZE = 50
# The API's fields; the serializer renders `organization` as its slug, .values() needs its path.
_VALUES_PATHS = {"organization": "organization__slug"}
FIELDS = tuple(_VALUES_PATHS.get(name, name) for name in TicketOutputSerializer.Meta.fields)


def plain_tickets(request: HttpRequest) -> JsonResponse:
    """The first page of the token user's tickets, as the API orders them, with .values()."""
    key = request.headers.get("Authorization", "").removeprefix("Token ")
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None:
        return JsonResponse({"detail": "not authenticated"}, status=401)
    rows = Ticket.objects.filter(organization__memberships__user=token.user)
    count = rows.count()
    page = list(rows.order_by("-created_at", "-id").values(*FIELDS)[:PAGE_SIZE])
    return JsonResponse({"count": count, "results": page})


urlpatterns = [path("bench/plain-tickets/", plain_tickets), *zenith_urlpatterns]
