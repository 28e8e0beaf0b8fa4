"""Start-up refuses a production configuration that lacks a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ZENITH_FIELD"))}
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "missing", ["DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "ZENITH_FIELD_KEYS"]
)
def test_production_without_a_secret_refuses_to_start(missing):
    env = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "x" * 50,
        "DJANGO_ALLOWED_HOSTS": "zenith.example.com",
        "ZENITH_FIELD_KEYS": "FEFBsUTHbMNthMXUMuBqd2-iCF3LXnz75CXgW5XDQR0=",
    }
    del env[missing]
    result = run_check(env)
    assert result.returncode != 0
    assert f"{missing} must be set" in result.stderr


def test_production_with_every_secret_starts():
    result = run_check(
        {
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "x" * 50,
            "DJANGO_ALLOWED_HOSTS": "zenith.example.com",
            "ZENITH_FIELD_KEYS": "FEFBsUTHbMNthMXUMuBqd2-iCF3LXnz75CXgW5XDQR0=",
        }
    )
    assert result.returncode == 0, result.stderr
