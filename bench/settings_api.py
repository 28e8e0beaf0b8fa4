"""Settings of the API benchmark's gunicorn: Zenith's, plus a plain view to compare with."""

from zenith.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api_urls"

# Measure as production runs (no per-query debug log), keeping the development defaults
# of the keys that DJANGO_DEBUG=0 would require.
DEBUG = False
