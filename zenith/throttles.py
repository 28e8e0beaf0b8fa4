"""DRF throttles whose rates come from settings on each request (ZENITH_THROTTLE_RATES).

DRF's own classes copy their rates once at import; reading them per request lets the
environment, and a test's settings override, decide. A view opts into a tighter limit
with `throttle_scope` (on an `@action`, as a keyword argument).
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle, UserRateThrottle


class _RatesFromSettings:
    scope: str | None

    def get_rate(self) -> str | None:
        """None (no limit) when throttling is off or the scope has no rate."""
        if not settings.ZENITH_THROTTLE_ENABLED:
            return None
        rates: dict[str, str] = settings.ZENITH_THROTTLE_RATES
        return rates.get(self.scope or "")


class AnonThrottle(_RatesFromSettings, AnonRateThrottle):
    """Anonymous callers, per address."""


class UserThrottle(_RatesFromSettings, UserRateThrottle):
    """Every caller: per user, or per address when anonymous."""


class ScopedThrottle(_RatesFromSettings, ScopedRateThrottle):
    """Views with a `throttle_scope`: per user and scope."""
