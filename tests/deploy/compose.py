"""Driving docker/docker-compose.yml from tests: the commands README's deploy section gives.

Every stack gets its own Compose project name, publishes its ports on 127.0.0.1 only (free
ports, through the ZENITH_*_PORT variables) and is removed with `down -v` however the test ends.
The containers are the test's own hosts, on the bridge network Compose creates for the project.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = "docker/docker-compose.yml"
DEV_FILE = "docker/docker-compose.dev.yml"
DEV_ENV_FILE = "docker/dev.env"
# Names the compose file's base images; docker_setup.sh builds stand-ins where no registry is.
BASE_IMAGES = ("python:3.11-slim", "redis:7", "postgres:16", "prom/prometheus:v3.5.0")
SERVICES = (
    "postgres",
    "redis",
    "web",
    "celery_worker",
    "celery_worker_ml",
    "celery_worker_sync",
    "celery_beat",
    "flower",
)
PUBLIC_HOST = "zenith.example.com"
FLOWER_AUTH = ("ops", "change-me")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_problem() -> str | None:
    """Why the stack cannot run here, or None."""
    if shutil.which("docker") is None:
        return "the docker client"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
        version = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "a Docker engine"
    if info.returncode != 0:
        return "a Docker engine (scripts/docker_setup.sh starts one)"
    if version.returncode != 0:
        return "Docker Compose v2 (scripts/docker_setup.sh installs it)"
    for image in BASE_IMAGES:
        found = subprocess.run(["docker", "image", "inspect", image], capture_output=True)
        if found.returncode != 0:
            return f"the base image {image} (scripts/docker_setup.sh builds it)"
    return None


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except requests.RequestException as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def operator_env() -> dict[str, str]:
    """What README's deploy section tells an operator to export, with fresh secrets."""
    from cryptography.fernet import Fernet

    return {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "ZENITH_FIELD_KEYS": Fernet.generate_key().decode(),
        "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH),
        "DJANGO_ALLOWED_HOSTS": PUBLIC_HOST,
        "ZENITH_METRICS_TOKEN": secrets.token_urlsafe(24),
    }


class Stack:
    """One Compose project: `docker compose [files] ...` with only the given environment."""

    def __init__(
        self,
        *,
        project: str,
        env: dict[str, str],
        files: Sequence[str] = (COMPOSE_FILE,),
        env_file: str | None = None,
        log_dir: Path,
    ) -> None:
        self.project = project
        self.files = list(files)
        self.env_file = env_file
        self.log_dir = log_dir
        self.ports = {
            "ZENITH_WEB_PORT": free_port(),
            "ZENITH_FLOWER_PORT": free_port(),
            "ZENITH_PROMETHEUS_PORT": free_port(),
            "ZENITH_DEV_POSTGRES_PORT": free_port(),
            "ZENITH_DEV_REDIS_PORT": free_port(),
        }
        # Nothing of the test process's own environment (its DATABASE_URL, DJANGO_*) leaks in.
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "COMPOSE_PROJECT_NAME": project,
            **{name: str(port) for name, port in self.ports.items()},
            **env,
        }
        if "DOCKER_HOST" in os.environ:
            self.env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
        self.web = f"http://127.0.0.1:{self.ports['ZENITH_WEB_PORT']}"
        self.flower = f"http://127.0.0.1:{self.ports['ZENITH_FLOWER_PORT']}"
        self.prometheus = f"http://127.0.0.1:{self.ports['ZENITH_PROMETHEUS_PORT']}"
        self.extra_containers: list[str] = []

    # --- commands ----------------------------------------------------------------------------
    def base_command(self) -> list[str]:
        command = ["docker", "compose"]
        for file in self.files:
            command += ["-f", file]
        if self.env_file:
            command += ["--env-file", self.env_file]
        return command

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.base_command(), *args],
            cwd=ROOT,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def up(self, *args: str, timeout: float = 900) -> None:
        self.compose("up", "-d", "--wait", *args, timeout=timeout)

    def exec(self, service: str, *command: str, input: str | None = None) -> str:
        return self.compose("exec", "-T", service, *command, input=input, timeout=300).stdout

    def manage(self, service: str, *args: str, input: str | None = None) -> str:
        return self.exec(service, "python", "manage.py", *args, input=input)

    def shell(self, code: str, *, input: str | None = None, service: str = "web") -> Any:
        """Run Python in a container's Django shell; it prints one JSON document."""
        out = self.manage(service, "shell", "-c", code, input=input)
        return json.loads(out.strip().splitlines()[-1])

    def down(self) -> None:
        for container in self.extra_containers:
            subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True)
        # The monitoring profile too: `down` leaves the services of inactive profiles running.
        self.compose(
            "--profile",
            "monitoring",
            "down",
            "-v",
            "--remove-orphans",
            "--timeout",
            "20",
            check=False,
            timeout=300,
        )

    def save_logs(self) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{self.project}.log"
        logs = self.compose("logs", "--no-color", "--timestamps", check=False, timeout=120)
        path.write_text(logs.stdout + logs.stderr)
        return path

    # --- containers --------------------------------------------------------------------------
    def containers(self, service: str | None = None, *, all: bool = False) -> list[dict[str, Any]]:
        """`docker inspect` of the project's containers (of one service)."""
        args = ["ps", "-q"] + (["-a"] if all else []) + ([service] if service else [])
        ids = self.compose(*args).stdout.split()
        if not ids:
            return []
        out = subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)

    def container(self, service: str) -> dict[str, Any]:
        found = self.containers(service)
        assert len(found) == 1, f"{service}: {len(found)} containers"
        return found[0]

    def health(self) -> dict[str, str]:
        """Container name -> health ("healthy", "starting", "unhealthy", or the state)."""
        result = {}
        for info in self.containers(all=True):
            state = info["State"]
            result[info["Name"].lstrip("/")] = (
                state.get("Health", {}).get("Status") or state["Status"]
            )
        return result

    @property
    def network(self) -> str:
        return f"{self.project}_default"


class Api:
    """The HTTP API as an operator's client sees it through a reverse proxy (Host header)."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.session.headers["Host"] = PUBLIC_HOST

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(f"{self.base}/api/v1/{path}", timeout=60, **kwargs)

    def post(self, path: str, json: dict[str, Any] | None = None) -> requests.Response:
        return self.session.post(f"{self.base}/api/v1/{path}", json=json or {}, timeout=60)

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.get(f"tasks/status/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_task(self, task_id: str, states: set[str], timeout: float = 300) -> dict[str, Any]:
        return wait_until(
            lambda: (task := self.task(task_id))["state"] in states and task,
            timeout=timeout,
            what=f"task {task_id} in {states}",
            every=2,
        )
