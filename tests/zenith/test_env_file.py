"""Settings read a .env file when present; the real environment wins over it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRINT = (
    "from django.conf import settings; "
    "print(','.join(settings.ALLOWED_HOSTS)); print(settings.LOG_FORMAT); print(settings.LOG_LEVEL)"
)


def settings_seen(env: dict[str, str]) -> list[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_ALLOWED_HOSTS", "DJANGO_LOG_LEVEL", "ZENITH_LOG_FORMAT")
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", PRINT],
        cwd=ROOT,
        env={**base, "DJANGO_DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-3:]


def test_values_in_the_env_file_are_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n"
        "DJANGO_ALLOWED_HOSTS=dotenv.example,api.dotenv.example\n"
        "DJANGO_LOG_LEVEL=WARNING\n"
        "ZENITH_LOG_FORMAT=json\n"
    )

    hosts, log_format, level = settings_seen(
        {"ZENITH_ENV_FILE": str(env_file), "ZENITH_LOG_FORMAT": "plain"}
    )

    assert hosts == "dotenv.example,api.dotenv.example"  # from the file
    assert level == "WARNING"  # from the file
    assert log_format == "plain"  # the real environment wins over the file


def test_without_the_file_the_defaults_apply(tmp_path):
    hosts, log_format, level = settings_seen({"ZENITH_ENV_FILE": str(tmp_path / "absent.env")})

    assert hosts == "localhost,127.0.0.1,[::1],testserver"
    assert log_format == "plain"  # DEBUG's default
    assert level == "INFO"
