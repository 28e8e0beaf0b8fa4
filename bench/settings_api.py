"""Settings of the API benchmark's gunicorn: Zenith's, plus a plain view to compare with."""

from zenith.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api_urls"

# Measure as production runs (no per-query debug log), keeping the development defaults
# of the keys that DJANGO_DEBUG=0 would require.
DEBUG = False

# The throttles run (their cost is part of a request) but never refuse the benchmark's
# one user, who sends far more than the production per-user rate.
ZENITH_THROTTLE_RATES = {**ZENITH_THROTTLE_RATES, "user": "10000000/minute"}  # noqa: F405
