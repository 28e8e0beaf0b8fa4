"""`make run`'s processes come up, serve the schema and the demo tickets, and stop cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.services import port_open

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_make_run_serves_the_demo_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        # DJANGO_DEBUG too (the test run sets it): `make run` must turn it on by itself.
        if k
        not in {
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "REDIS_URL",
            "ZENITH_BROKER_DIR",
            "DJANGO_DEBUG",
        }
    }
    # The embedded default, in a temp dir so the developer's own zenith.db is untouched.
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'zenith.db'}",
        ZENITH_BROKER_DIR=str(tmp_path / "broker"),
        ZENITH_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "scripts/run_dev.py"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 400
        output = ""
        answered_after = None
        while time.monotonic() < deadline:
            output = log_path.read_text(errors="replace")
            if answered_after is None and port_open("127.0.0.1", port):
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"http://127.0.0.1:{port}/api/v1/", timeout=5).ok:
                        answered_after = time.monotonic() - started
                        print(f"make run answered /api/v1/ {answered_after:.1f}s after its start")
            if "Zenith is running" in output and port_open("127.0.0.1", port):
                break
            assert process.poll() is None, output[-3000:]
            time.sleep(1)
        else:
            pytest.fail(f"make run did not come up:\n{output[-3000:]}")

        token = re.search(r"Authorization: Token (\w+)", output).group(1)
        assert "login demo / zenith-demo" in output
        # The login and token come last, after the import's lines.
        assert output.rstrip().endswith("Press Ctrl-C to stop web, worker and beat.")
        headers = {"Authorization": f"Token {token}"}
        base = f"http://127.0.0.1:{port}"
        root = requests.get(f"{base}/", timeout=30, allow_redirects=False)
        assert root.status_code == 302
        assert root.headers["Location"] == "/api/v1/"
        answered = requests.get(f"{base}/api/v1/", headers=headers, timeout=30)
        assert answered.status_code == 200
        assert answered_after is not None
        schema = requests.get(f"{base}/api/v1/schema/", headers=headers, timeout=30)
        assert schema.status_code == 200
        assert "/api/v1/tickets/" in schema.text
        tickets = requests.get(f"{base}/api/v1/tickets/", headers=headers, timeout=30)
        assert tickets.status_code == 200
        assert tickets.json()["count"] == 5431
        assert requests.get(f"{base}/admin/login/", timeout=30).status_code == 200
        # Training ran on the worker meanwhile, then classified the imported tickets.
        while time.monotonic() < deadline:
            models = requests.get(f"{base}/api/v1/models/", headers=headers, timeout=30).json()
            active = {m["target"] for m in models["results"] if m["status"] == "active"}
            if active == {"category", "priority"} and _classified(base, headers):
                break
            time.sleep(2)
        else:
            pytest.fail(f"the demo model was not trained and applied:\n{models}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 0
    assert not port_open("127.0.0.1", port)
    assert processes_with_env(f"ZENITH_BROKER_DIR={tmp_path / 'broker'}") == []


def _classified(base: str, headers: dict[str, str]) -> bool:
    """Whether the worker's batch classification has reached the demo's tickets."""
    page = requests.get(f"{base}/api/v1/tickets/?page_size=5", headers=headers, timeout=30).json()
    return all(
        ticket["predictions"]["category"] and ticket["predictions"]["priority"]
        for ticket in page["results"]
    )


def processes_with_env(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker` (web, worker, beat)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
