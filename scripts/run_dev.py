#!/usr/bin/env python
"""`make run`: prepare the embedded setup, then run web, a worker and beat until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = os.environ.get("ZENITH_HOST", "127.0.0.1")
PORT = os.environ.get("ZENITH_PORT", "8000")


def manage(*args: str) -> None:
    """Run one manage.py command in the foreground; stop on failure."""
    subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, check=True)  # noqa: S603


def prepare() -> None:
    (ROOT / "var").mkdir(exist_ok=True)
    manage("migrate", "--noinput", "-v", "0")
    manage("setup_periodic_tasks")


def seed() -> None:
    """The demo organization (idempotent); the server already answers meanwhile."""
    manage("seed_demo", "--quiet")


def train_in_background() -> None:
    """Queue the demo's training on the worker (then classify what was imported before it);
    the server answers meanwhile and the admin's task list shows its progress."""
    manage("train_models", "--org", "demo", "--async", "--classify-after")


def start() -> list[subprocess.Popen[bytes]]:
    worker = [PYTHON, "scripts/start_celery_worker.py"]
    commands = {
        "web": [PYTHON, "manage.py", "runserver", f"{HOST}:{PORT}", "--noreload"],
        "worker": [*worker, "worker", "--worker-type", "all", "--concurrency", "2"],
        "beat": [*worker, "beat"],
    }
    processes = []
    for name, command in commands.items():
        print(f"starting {name}: {' '.join(command[1:])}", flush=True)
        processes.append(subprocess.Popen(command, cwd=ROOT))  # noqa: S603
    return processes


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM (from a test or a supervisor) stops everything the same way Ctrl-C does.
    raise KeyboardInterrupt


def main() -> int:
    os.chdir(ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "zenith.settings")
    # The local demo is development: dev keys, the demo login. Settings default to off.
    os.environ.setdefault("DJANGO_DEBUG", "1")
    prepare()
    processes = start()
    seed()
    train_in_background()
    token = subprocess.run(  # noqa: S603
        [PYTHON, "manage.py", "drf_create_token", "demo"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[2]
    print(
        f"\nZenith is running (the demo model trains on the worker: see Tasks in the admin):\n"
        f"  admin:  http://{HOST}:{PORT}/admin/  (login demo / zenith-demo)\n"
        f"  API:    http://{HOST}:{PORT}/api/v1/  (Authorization: Token {token})\n"
        f"  docs:   http://{HOST}:{PORT}/api/v1/docs/\n"
        f"Press Ctrl-C to stop web, worker and beat.\n",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
        print("a process exited; stopping the others", flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stop(processes)


if __name__ == "__main__":
    sys.exit(main())
