"""With ZENITH_LOG_FORMAT=json every line a worker or gunicorn prints is JSON, shutdown included.

A real Celery worker (as Docker starts it) and a real gunicorn (with zenith/gunicorn_conf.py,
as the Dockerfile starts it) serve a request and are stopped with SIGTERM, pool processes
too, as a terminal's Ctrl+C or `docker compose down` reaching every process would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
import urllib.request
from typing import Any

import pytest

from tests.support.workers import ManagedProcess, ProcessManager

JSON_LOGS = {"ZENITH_LOG_FORMAT": "json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def every_line_json(process: ManagedProcess) -> list[dict[str, Any]]:
    """The process's whole stdout+stderr, each non-empty line parsed; anything else fails."""
    entries = []
    for number, line in enumerate(process.log().splitlines(), start=1):
        if not line.strip():
            pytest.fail(f"{process.name} line {number} is blank (not JSON)")
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{process.name} line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        assert {"event", "level", "timestamp"} <= entry.keys(), line
        entries.append(entry)
    return entries


def terminate_all(process: ManagedProcess) -> None:
    """SIGTERM to the main process and its children at once, then wait for the exit."""
    pids = [process.pid, *process.children()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    assert process.process is not None
    process.process.wait(timeout=60)


def wait_http(url: str, process: ManagedProcess, timeout: float = 60.0) -> tuple[int, bytes]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http only)
                return response.status, response.read()
        except OSError as error:
            if not process.alive() or time.monotonic() > deadline:
                raise AssertionError(
                    f"gunicorn never answered:\n{process.log()[-3000:]}"
                ) from error
            time.sleep(0.3)


def test_worker_and_gunicorn_print_only_json_through_sigterm(processes: ProcessManager) -> None:
    worker = processes.worker(worker_type="general", concurrency=1, env=JSON_LOGS)
    port = free_port()
    web = processes.spawn(
        name="gunicorn",
        command=[
            sys.executable,
            "-m",
            "gunicorn",
            "zenith.wsgi",
            "-c",
            "python:zenith.gunicorn_conf",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        env={**JSON_LOGS, "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"},
    )
    status, body = wait_http(f"http://127.0.0.1:{port}/api/v1/?format=json", web)
    assert status == 200
    assert body.startswith(b"{")
    web.wait_for_log('"http_request"', timeout=30)

    # A pool process killed under a running worker: billiard logs its exit (and the pool
    # replaces it) on the `multiprocessing` logger, which printed a bare line before.
    children = worker.children()
    assert children, "the prefork worker has no pool process"
    os.kill(children[0], signal.SIGTERM)
    worker.wait_for_log("exited with", timeout=60)
    terminate_all(worker)
    terminate_all(web)

    worker_lines = every_line_json(worker)
    web_lines = every_line_json(web)

    worker_events = [entry["event"] for entry in worker_lines]
    assert "worker_shutting_down" in worker_events, worker_events
    shutting = next(e for e in worker_lines if e["event"] == "worker_shutting_down")
    assert shutting["how"] == "Warm"
    assert shutting["signal"] == "SIGTERM"
    exits = [e for e in worker_lines if "exited with" in e["event"]]
    assert exits, worker_events
    assert exits[0]["logger"] == "multiprocessing"
    assert "signal 15 (SIGTERM)" in exits[0]["event"]
    # Celery's own words, as a logged record rather than a bare print.
    assert "worker: Warm shutdown (MainProcess)" in worker_events
    assert any(e["logger"] == "celery.apps.worker" and "ready" in e["event"] for e in worker_lines)

    # Gunicorn's boot and shutdown lines and the request's access line, all JSON.
    assert any(e["logger"] == "gunicorn.error" and "Listening at" in e["event"] for e in web_lines)
    assert any(e["logger"] == "gunicorn.error" and "Shutting down" in e["event"] for e in web_lines)
    access = [
        e for e in web_lines if e["event"] == "http_request" and e["path"] == "/api/v1/?format=json"
    ]
    assert access, [e for e in web_lines if e["event"] == "http_request"]
    assert {e["logger"] for e in access} == {"gunicorn.access"}
    assert access[-1]["method"] == "GET"
    assert access[-1]["status"] == 200
    assert access[-1]["duration_ms"] >= 0
