"""Set-up shared by the benchmark modules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django(tmp: Path, *, name: str, keep_redis_broker: bool = False) -> str:
    """Configure Django on a throwaway database, media folder and broker; returns the database.

    With a PostgreSQL DATABASE_URL a `bench_<name>_<db>` database is created (the named one is
    never written); otherwise a SQLite file in `tmp`. The broker is a private filesystem one
    unless `keep_redis_broker` and CELERY_BROKER_URL is Redis.
    """
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenith.settings")
    if not (keep_redis_broker and os.environ.get("CELERY_BROKER_URL", "").startswith("redis://")):
        os.environ["CELERY_BROKER_URL"] = "filesystem://"
        os.environ["ZENITH_BROKER_DIR"] = str(tmp / "broker")
    os.environ["DJANGO_MEDIA_ROOT"] = str(tmp / "media")
    use_postgres = os.environ.get("DATABASE_URL", "").startswith("postgres")
    if not use_postgres:
        os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.db'}"

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    # Measure as production runs: no per-query debug log.
    settings.DEBUG = False
    if use_postgres:
        connection.settings_dict.setdefault("TEST", {})
        connection.settings_dict["TEST"]["NAME"] = (
            f"bench_{name}_{connection.settings_dict['NAME']}"
        )
        connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
        return "postgresql"
    call_command("migrate", verbosity=0)
    return "sqlite"
