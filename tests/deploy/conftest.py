"""Fixtures of the compose tests: the image built once per run, stacks brought up per module."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.compose import (
    COMPOSE_FILE,
    DEV_ENV_FILE,
    DEV_FILE,
    ROOT,
    Stack,
    engine_problem,
    operator_env,
)
from tests.support.services import missing

DOVECOT_IMAGE = "zenith-test/dovecot:latest"
DOVECOT_USER = ("support", "mail-secret")
# What the stages took, printed at the end of the run (CI reads the minutes there).
TIMINGS: list[tuple[str, float]] = []
# Modules with a failed test: their stack's logs are saved before `down -v`.
FAILED_MODULES: set[str] = set()


def timed(stage: str, started: float) -> None:
    TIMINGS.append((stage, time.monotonic() - started))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if TIMINGS:
        terminalreporter.section("compose stages")
        for stage, seconds in TIMINGS:
            terminalreporter.write_line(f"{stage:<45} {seconds / 60:5.2f} min ({seconds:.0f}s)")


def project_name(kind: str) -> str:
    return f"zenith-test-{kind}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def compose_image() -> str:
    """zenith:latest built from docker/Dockerfile once per run (Docker's layer cache applies)."""
    problem = engine_problem()
    if problem:
        missing(problem)
    started = time.monotonic()
    # Compose needs the required variables to read the file even for `build`.
    stack = Stack(project=project_name("build"), env=operator_env(), log_dir=Path("/tmp"))
    stack.compose("build", "web", timeout=1800)
    timed("build zenith image", started)
    started = time.monotonic()
    subprocess.run(
        ["docker", "build", "-q", "--network", "host", "-t", DOVECOT_IMAGE, "dovecot"],
        cwd=Path(__file__).parent,
        check=True,
        capture_output=True,
        timeout=900,
    )
    timed("build test Dovecot image", started)
    return "zenith:latest"


def start_dovecot(stack: Stack) -> int:
    """Dovecot as `dovecot` on the stack's network; its IMAP port on 127.0.0.1 for seeding."""
    from tests.deploy.compose import free_port

    name = f"{stack.project}-dovecot"
    port = free_port()
    stack.extra_containers.append(name)
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--network",
            stack.network,
            "--network-alias",
            "dovecot",
            "-p",
            f"127.0.0.1:{port}:143",
            DOVECOT_IMAGE,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return port


def bring_up(stack: Stack, stage: str, request: pytest.FixtureRequest) -> Iterator[Stack]:
    started = time.monotonic()
    failed = False
    try:
        stack.up()
        timed(stage, started)
        yield stack
    except BaseException:
        failed = True
        raise
    finally:
        failed = failed or request.module.__name__ in FAILED_MODULES
        if failed or os.environ.get("ZENITH_COMPOSE_KEEP_LOGS"):
            print(f"compose logs: {stack.save_logs()}", flush=True)
        started = time.monotonic()
        stack.down()
        timed(f"{stage}: down -v", started)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    report = yield
    if report.failed:
        FAILED_MODULES.add(item.module.__name__)
    return report


@pytest.fixture(scope="module")
def prod_stack(compose_image: str, tmp_path_factory, request) -> Iterator[Stack]:
    """docker/docker-compose.yml with README's environment, plus the container env file."""
    env_file = tmp_path_factory.mktemp("compose") / "zenith.env"
    # The operator's `.env` of the Zenith containers (README: ZENITH_ENV_FILE). The worker
    # kill test needs the dead worker's tasks back within a minute, not the default two hours;
    # the test's Dovecot is a plaintext server on a private network.
    env_file.write_text(
        "ZENITH_BROKER_VISIBILITY_TIMEOUT=60\n"
        "ZENITH_IMAP_ALLOW_PLAINTEXT=1\n"
        "ZENITH_IMAP_ALLOW_PRIVATE_HOSTS=1\n"
    )
    stack = Stack(
        project=project_name("prod"),
        env={**operator_env(), "ZENITH_ENV_FILE": str(env_file)},
        files=[COMPOSE_FILE],
        log_dir=ROOT / "var" / "compose-logs",
    )
    yield from bring_up(stack, "production stack: up --wait", request)


@pytest.fixture(scope="module")
def dev_stack(compose_image: str, request) -> Iterator[Stack]:
    """README's development command: both files and docker/dev.env, nothing exported."""
    stack = Stack(
        project=project_name("dev"),
        env={},
        files=[COMPOSE_FILE, DEV_FILE],
        env_file=DEV_ENV_FILE,
        log_dir=ROOT / "var" / "compose-logs",
    )
    yield from bring_up(stack, "development stack: up --wait", request)


def superuser_token(stack: Stack, username: str = "ops") -> str:
    """README: `createsuperuser` in the web container, then a DRF token for the API."""
    stack.compose(
        "exec",
        "-T",
        "-e",
        "DJANGO_SUPERUSER_PASSWORD=Ops-pass-123",
        "web",
        "python",
        "manage.py",
        "createsuperuser",
        "--noinput",
        "--username",
        username,
        "--email",
        f"{username}@example.com",
    )
    out = stack.manage("web", "drf_create_token", username)
    match = re.search(r"\b([0-9a-f]{40})\b", out)
    assert match, out
    return match.group(1)
