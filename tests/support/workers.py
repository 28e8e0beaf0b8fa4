"""Real Celery worker (and beat) processes started the way Docker starts them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from tests.support.services import database_url

ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = ROOT / "scripts" / "start_celery_worker.py"


def process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that shares this test run's database and broker."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "ZENITH_BROKER_DIR": str(settings.BROKER_DIR),
            "DJANGO_DEBUG": "1",
            "PYTHONUNBUFFERED": "1",
            "ZENITH_RETRY_DELAYS": ",".join(str(d) for d in settings.ZENITH_RETRY_DELAYS),
        }
    )
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    env.update(extra or {})
    return env


@dataclass
class ManagedProcess:
    """A child process whose output goes to a log file the test can read."""

    name: str
    command: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    hostname: str = ""
    _log: object = field(default=None, repr=False)

    def start(self) -> ManagedProcess:
        handle = self.log_path.open("ab")
        self._log = handle
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 60.0, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log()[since:]:
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}):\n{self.log()[-4000:]}"
                )
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} did not log {text!r} in {timeout}s:\n{self.log()[-4000:]}")

    def children(self) -> list[int]:
        """Pids of the pool processes (direct children)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        try:
            return [int(pid) for pid in path.read_text().split()]
        except OSError:
            return []

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the main process and its pool: a crash, not a shutdown."""
        if not self.alive():
            return
        pids = self.children()
        os.kill(self.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (warm shutdown), then SIGKILL if it does not exit in time."""
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


class ProcessManager:
    """Starts workers, beat and other processes for one test and stops them all after it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[ManagedProcess] = []

    def worker(
        self,
        *,
        worker_type: str = "all",
        concurrency: int = 1,
        pool: str = "prefork",
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        wait: bool = True,
    ) -> ManagedProcess:
        """Start `scripts/start_celery_worker.py worker` and wait until it is ready."""
        hostname = f"{worker_type}-{uuid.uuid4().hex[:8]}@localhost"
        command = [
            sys.executable,
            str(START_SCRIPT),
            "worker",
            "--worker-type",
            worker_type,
            "--concurrency",
            str(concurrency),
            "--pool",
            pool,
            "--hostname",
            hostname,
            *(extra_args or []),
        ]
        managed = self.spawn(name=hostname, command=command, env=env)
        managed.hostname = hostname
        if wait:
            managed.wait_for_log(" ready.", timeout=90)
        return managed

    def beat(self, *, env: dict[str, str] | None = None, name: str = "beat") -> ManagedProcess:
        command = [sys.executable, str(START_SCRIPT), "beat", "--loglevel", "DEBUG"]
        return self.spawn(name=name, command=command, env=env)

    def spawn(
        self, *, name: str, command: list[str], env: dict[str, str] | None = None
    ) -> ManagedProcess:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
        log_path = self.directory / f"{len(self.processes):02d}-{safe}.log"
        managed = ManagedProcess(
            name=name, command=command, log_path=log_path, env=process_env(env)
        )
        self.processes.append(managed.start())
        return managed

    def stop_all(self) -> None:
        for managed in reversed(self.processes):
            managed.stop()


def iter_logs(manager: ProcessManager) -> Iterator[tuple[str, str]]:
    for managed in manager.processes:
        yield managed.name, managed.log()
