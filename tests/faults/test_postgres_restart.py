"""Restart PostgreSQL under a worker classifying tickets: tasks retry and finish, once each.

The machine's PostgreSQL on 5432 is shared, so the test runs a private cluster (initdb as
the postgres user, a free port, fsync off) and gives it to the processes it starts: the
management commands that seed it and the worker. This process only reads it with psycopg.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.faults.conftest import wait_until
from tests.mlmodels.conftest import sample_rows, write_csv
from tests.support.services import missing
from tests.support.workers import ROOT, process_env

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TICKETS = 240
CLASSIFY = "mlmodels.tasks.classify_ticket_task"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin() -> Path | None:
    for version in sorted(Path("/usr/lib/postgresql").glob("*"), reverse=True):
        if (version / "bin" / "initdb").exists():
            return version / "bin"
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster run by the postgres user on a free port."""

    def __init__(self, bin_dir: Path, directory: Path, port: int) -> None:
        self.bin_dir, self.directory, self.port = bin_dir, directory, port
        self.data = directory / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/zenith"

    def _run(self, *command: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.directory / "postgres.log")
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            log,
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as connection:
            return connection.execute(sql, params).fetchall()

    def scalar(self, sql: str, *params: object) -> int:
        return int(self.query(sql, *params)[0][0])


@pytest.fixture
def private_postgres(real_services) -> Iterator[PrivatePostgres]:
    bin_dir = pg_bin()
    if bin_dir is None:
        missing("PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb)")
    # pytest's tmp_path sits under a root-only directory the postgres user cannot enter.
    directory = Path(tempfile.mkdtemp(prefix="zenith-pg-"))
    directory.chmod(0o755)
    if os.geteuid() == 0:
        postgres = pwd.getpwnam("postgres")
        os.chown(directory, postgres.pw_uid, postgres.pw_gid)
    server = PrivatePostgres(bin_dir, directory, free_port())
    try:
        server.init()
        server.start()
        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{server.port}/postgres", autocommit=True
        ) as connection:
            connection.execute("CREATE DATABASE zenith")
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop("immediate")
        shutil.rmtree(directory, ignore_errors=True)


def manage(env: dict[str, str], *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=process_env(env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, f"manage.py {' '.join(args)}:\n{completed.stderr[-3000:]}"
    return completed.stdout


ENQUEUE = f"""
from mlmodels.models import Prediction
from taskops.services import task_enqueue
from tickets.models import Ticket
Prediction.objects.all().delete()
for ticket_id in Ticket.objects.order_by("pk").values_list("pk", flat=True):
    task_enqueue(name="{CLASSIFY}", kwargs={{"ticket_id": ticket_id}})
"""


def test_tasks_retry_and_finish_once_across_postgres_restarts(
    private_postgres, broker, processes, tmp_path
):
    pg = private_postgres
    env = {
        "DATABASE_URL": pg.url,
        "DJANGO_MEDIA_ROOT": str(tmp_path / "media"),
        "ZENITH_RETRY_DELAYS": "1,2,3",
    }
    manage(env, "migrate", "--no-input")
    csv_path = write_csv(tmp_path / "sample.csv", sample_rows(TICKETS, 0))
    manage(
        env, "import_tickets", "--org", "pgfault", str(csv_path),
        "--text", "title,body", "--label", "category=category", "--label", "priority=urgency",
    )  # fmt: skip
    manage(env, "train_models", "--org", "pgfault")
    assert pg.scalar("SELECT count(*) FROM mlmodels_modelversion WHERE status = 'active'") == 2
    manage(env, "shell", "-c", ENQUEUE)
    assert pg.scalar("SELECT count(*) FROM taskops_taskrecord WHERE name = %s", CLASSIFY) == TICKETS

    worker = processes.worker(worker_type="ml", concurrency=2, env=env)

    def predictions() -> int:
        return pg.scalar("SELECT count(*) FROM mlmodels_prediction")

    # Three outages of a few seconds each, while tasks are running.
    for round_ in range(3):
        wait_until(lambda r=round_: predictions() >= (r + 1) * TICKETS // 3, timeout=120)
        pg.stop("fast")
        time.sleep(4)
        pg.start()

    def ledger_done() -> bool:
        return not pg.scalar(
            "SELECT count(*) FROM taskops_taskrecord WHERE name = %s "
            "AND state NOT IN ('SUCCESS', 'FAILURE', 'REVOKED')",
            CLASSIFY,
        )

    wait_until(ledger_done, timeout=180, interval=0.5)
    worker_log = worker.log()
    assert "OperationalError" in worker_log or "InterfaceError" in worker_log, (
        "the outages reached running tasks"
    )

    states = dict(
        pg.query(
            "SELECT state, count(*) FROM taskops_taskrecord WHERE name = %s GROUP BY 1", CLASSIFY
        )
    )
    assert states == {"SUCCESS": TICKETS}, states
    assert (
        pg.scalar(
            "SELECT count(*) FROM django_celery_results_taskresult "
            "WHERE task_name = %s AND status = 'SUCCESS'",
            CLASSIFY,
        )
        == TICKETS
    )
    # One prediction per ticket and target, from the active version: nothing half-written.
    assert predictions() == 2 * TICKETS
    assert (
        pg.scalar("SELECT count(DISTINCT (ticket_id, model_version_id)) FROM mlmodels_prediction")
        == 2 * TICKETS
    )
    assert (
        pg.scalar(
            "SELECT count(*) FROM tickets_ticket t WHERE NOT EXISTS "
            "(SELECT 1 FROM mlmodels_prediction p WHERE p.ticket_id = t.id)"
        )
        == 0
    )
