"""Fail closed: without DJANGO_DEBUG, Zenith runs as production and demands its secrets.

Real `manage.py` processes with a chosen environment; nothing of this test process's
settings leaks into them.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.support.services import database_url, redis_url

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "DJANGO_SECRET_KEY": "s" * 50,
    "DJANGO_ALLOWED_HOSTS": "zenith.example.com",
    "ZENITH_FIELD_KEYS": "4CbKbmAZmoUrHwnzxMeY9c1y3LqxNhSpLK4C7DtKiIY=",
}


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Django/Zenith setting, plus `extra`."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "ZENITH_", "FLOWER_", "SLACK_"))
    }
    return {**base, **extra}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.parametrize("missing", list(SECRETS))
def test_without_debug_set_a_missing_secret_stops_start_up_naming_it(missing):
    # DJANGO_DEBUG is not set at all: the default must be production.
    env = clean_env(**{k: v for k, v in SECRETS.items() if k != missing})
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert f"{missing} must be set" in result.stderr


def test_with_nothing_set_start_up_stops_at_the_first_secret():
    result = manage("check", env=clean_env())
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in result.stderr


def test_with_every_secret_and_no_debug_it_runs_as_production():
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print('DEBUG', settings.DEBUG, settings.SECRET_KEY)",
        env=clean_env(**SECRETS),
    )
    assert result.returncode == 0, result.stderr
    assert f"DEBUG False {'s' * 50}" in result.stdout


def test_debug_on_uses_the_development_values():
    result = manage(
        "shell",
        "-c",
        "from django.conf import settings; print('DEBUG', settings.DEBUG, settings.ALLOWED_HOSTS)",
        env=clean_env(DJANGO_DEBUG="1"),
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG True" in result.stdout


@pytest.mark.parametrize("debug", ["0", None])
def test_seed_demo_refuses_without_debug(transactional_db, debug):
    env = clean_env(**SECRETS, DATABASE_URL=database_url())
    if debug is not None:
        env["DJANGO_DEBUG"] = debug
    result = manage("seed_demo", env=env)
    assert result.returncode != 0
    assert "DJANGO_DEBUG=1" in result.stderr
    assert "--allow-production" in result.stderr
    assert not get_user_model().objects.filter(username="demo").exists()


@pytest.mark.slow
def test_seed_demo_runs_without_debug_when_explicitly_allowed(transactional_db):
    env = clean_env(**SECRETS, DATABASE_URL=database_url(), CELERY_BROKER_URL=redis_url())
    result = manage("seed_demo", "--allow-production", env=env)
    assert result.returncode == 0, result.stderr
    assert get_user_model().objects.filter(username="demo", is_superuser=True).exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_flower_refuses_to_start_without_credentials_outside_debug():
    result = subprocess.run(
        [sys.executable, "scripts/start_celery_worker.py", "flower", "--port", str(free_port())],
        cwd=ROOT,
        env=clean_env(**SECRETS),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH" in result.stderr


def test_flower_credentials_are_not_on_any_command_line(processes):
    """A real Flower: its password works over HTTP and is in no process's argv."""
    password = "flower-secret-7d1c"
    port = free_port()
    flower = processes.spawn(
        name="flower",
        command=[
            sys.executable,
            str(ROOT / "scripts" / "start_celery_worker.py"),
            "flower",
            "--port",
            str(port),
        ],
        env={
            **SECRETS,
            "DJANGO_DEBUG": "0",
            "CELERY_BROKER_URL": redis_url(),
            "FLOWER_BASIC_AUTH": f"ops:{password}",
        },
    )
    url = f"http://127.0.0.1:{port}/api/workers?refresh=0"
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline:
        assert flower.alive(), flower.log()[-2000:]
        try:
            urllib.request.urlopen(url, timeout=5)
        except urllib.error.HTTPError as exc:
            status = exc.code
            break
        except OSError:
            time.sleep(0.5)
            continue
        else:
            status = 200
            break
    assert status == 401  # up, and refusing a caller without the password

    token = base64.b64encode(f"ops:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 200

    # Neither Flower's process nor any other on the machine shows the password in argv.
    cmdlines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdlines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    assert any(f"--port={port}" in line for line in cmdlines), "Flower's process not found"
    assert not [line for line in cmdlines if password in line]
