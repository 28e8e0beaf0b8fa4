"""README's configuration table names every variable the settings and scripts read, no other."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Variables the code passes through rather than configures (Python's own import path).
NOT_CONFIGURATION = {"PYTHONPATH"}
READ = re.compile(
    r"""(?:\benv(?:\.\w+)?|os\.environ\.get|os\.environ\.setdefault|os\.getenv|_secret|_required|os\.environ)"""
    r"""\s*[(\[]\s*["']([A-Z][A-Z0-9_]+)["']"""
)


def names_read() -> set[str]:
    sources = [ROOT / "zenith" / "settings.py", *sorted((ROOT / "scripts").glob("*.py"))]
    names: set[str] = set()
    for source in sources:
        names |= set(READ.findall(source.read_text()))
    return names - NOT_CONFIGURATION


def names_documented() -> set[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    return names


def test_the_extraction_finds_what_the_settings_read():
    read = names_read()
    # A few read in each style: env.str(...) across lines, env.list, os.environ.get in scripts.
    assert {"DATABASE_URL", "SLACK_SCOPES", "ZENITH_LOG_FORMAT", "ZENITH_PORT"} <= read
    assert "ZENITH_ENV_FILE" in read


def test_every_variable_read_is_in_the_readme_table():
    missing = names_read() - names_documented()
    assert not missing, f"add to README's Configuration table: {sorted(missing)}"


def test_every_variable_in_the_table_is_read():
    unknown = names_documented() - names_read()
    assert not unknown, f"README documents variables nothing reads: {sorted(unknown)}"
