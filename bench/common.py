"""Set-up shared by the benchmark modules."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent


def run_json(args: list[str], *, env: Mapping[str, str], timeout: float) -> Any:
    """Run `python -m args...` from the project root; the JSON of its last stdout line."""
    output = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=dict(env),
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def teardown_django(database: str) -> None:
    """Drop the PostgreSQL database `setup_django` made (SQLite's goes with its temp folder)."""
    if database != "postgresql":
        return
    from django.db import connection

    connection.close()
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0, keepdb=False)


def setup_django(tmp: Path, *, name: str, keep_redis_broker: bool = False) -> str:
    """Configure Django on a throwaway database, media folder and broker; returns the database.

    With a PostgreSQL DATABASE_URL a `bench_<name>_<db>` database is created (the named one is
    never written); otherwise a SQLite file in `tmp`. The broker is a private filesystem one
    unless `keep_redis_broker` and CELERY_BROKER_URL is Redis.
    """
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenith.settings")
    # The development keys (settings fail closed without DEBUG); DEBUG itself is set off below.
    os.environ.setdefault("DJANGO_DEBUG", "1")
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


class BenchDatabase:
    """A throwaway database beside the configured one, migrated, dropped afterwards."""

    def __init__(self, label: str = "ledger") -> None:
        configured = os.environ.get("DATABASE_URL", "")
        self.postgres = configured.startswith(("postgres://", "postgresql://"))
        if self.postgres:
            parsed = urlparse(configured)
            self.name = f"{parsed.path.lstrip('/') or 'zenith'}_bench_{label}_{os.getpid()}"
            self.admin_url = urlunparse(parsed._replace(path="/postgres"))
            self.url = urlunparse(parsed._replace(path=f"/{self.name}"))
        else:
            (ROOT / "var").mkdir(exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix="zenith-bench-", dir=ROOT / "var")
            self.url = f"sqlite:///{self._dir}/bench.db"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def create(self, env: dict[str, str]) -> None:
        if self.postgres:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')
            self._admin(f'CREATE DATABASE "{self.name}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )

    def drop(self) -> None:
        if self.postgres:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        else:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)


# ------------------------------------------------------------------------------
# Worker processes
# ------------------------------------------------------------------------------
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
# The secrets a DEBUG-off process must have; the development values unless set.
_DEVELOPMENT_SECRETS = {
    "DJANGO_SECRET_KEY": "bench-" + "x" * 50,
    "DJANGO_ALLOWED_HOSTS": "localhost",
    "ZENITH_FIELD_KEYS": "FEFBsUTHbMNthMXUMuBqd2-iCF3LXnz75CXgW5XDQR0=",
}


def production_env() -> dict[str, str]:
    """Variables that run a child process with DEBUG off, as production does."""
    env = {"DJANGO_SETTINGS_MODULE": "zenith.settings", "DJANGO_DEBUG": "0"}
    for name, default in _DEVELOPMENT_SECRETS.items():
        env[name] = os.environ.get(name) or default
    return env


def database_url() -> str:
    """The URL of the database this Django process uses (setup_django's throwaway one)."""
    from urllib.parse import urlparse, urlunparse

    from django.db import connection

    configured = os.environ["DATABASE_URL"]
    if connection.vendor == "postgresql":
        path = f"/{connection.settings_dict['NAME']}"
        return urlunparse(urlparse(configured)._replace(path=path))
    return configured


def worker_start(
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    worker_type: str = "general",
    queues: Sequence[str] = (),
    concurrency: int = 1,
    name: str = "bench",
    app: str = "zenith",
    pool: str = "prefork",
) -> subprocess.Popen[bytes]:
    """Start a Celery worker, wait until it is ready, return its process; output goes to `log`.

    The worker runs as Docker runs one (scripts/start_celery_worker.py --worker-type), or
    with `queues` the same `celery worker` command on those queues only (a bench's own).
    `env` is laid over this process's environment. `app` and `pool` apply with `queues`
    (bench_floor runs its bare Celery app, `bench.floor_app`, that way).
    """
    hostname = f"{name}-{uuid.uuid4().hex[:6]}@localhost"
    if queues:
        command = [
            *(sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel", "INFO"),
            *("--queues", ",".join(queues), "--pool", pool),
        ]
    else:
        command = [
            *(sys.executable, "scripts/start_celery_worker.py", "worker"),
            *("--worker-type", worker_type),
        ]
    command += ["--hostname", hostname, "--concurrency", str(concurrency)]
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    full_env = {**os.environ, "PYTHONPATH": pythonpath, **(env or {})}
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=handle, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if " ready." in log.read_text(errors="replace"):
            return process
        if process.poll() is not None:
            break
        time.sleep(0.2)
    worker_stop(process)
    tail = log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"the bench worker did not start:\n{tail}")


def worker_stop(process: subprocess.Popen[bytes]) -> None:
    """Warm shutdown (SIGTERM); SIGKILL when it has not exited in STOP_TIMEOUT seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def worker(**options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """`worker_start(**options)` for the duration of a with block, stopped however it ends."""
    process = worker_start(**options)
    try:
        yield process
    finally:
        worker_stop(process)
