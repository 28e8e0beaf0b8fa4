""".env.example lists exactly the variables settings.py and the compose files read."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# env("X"), env.bool("X", …), env.str(…), _required("X", …), os.environ["X"], os.getenv("X")
SETTINGS_READ = re.compile(
    r"""(?:\benv(?:\.\w+)?|_required|os\.getenv|os\.environ\.get|os\.environ\[)\(?\s*["']([A-Z][A-Z0-9_]*)["']"""
)
# ${X}, ${X:-default}, ${X:?message}; not $${X} (a literal dollar for the container's shell)
COMPOSE_READ = re.compile(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)")
EXAMPLE_LINE = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def settings_variables() -> set[str]:
    return set(SETTINGS_READ.findall((ROOT / "zenith" / "settings.py").read_text()))


def compose_variables() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "docker").glob("docker-compose*.yml"):
        lines = path.read_text().splitlines()
        code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        found |= set(COMPOSE_READ.findall(code))
    # A compose secret read from the environment (`environment: NAME` under `secrets:`).
    compose = (ROOT / "docker" / "docker-compose.yml").read_text()
    secrets = compose.split("\nsecrets:", 1)[1]
    found |= set(re.findall(r"environment:\s*([A-Z][A-Z0-9_]*)", secrets))
    return found


def example_variables() -> set[str]:
    return set(EXAMPLE_LINE.findall((ROOT / ".env.example").read_text()))


def test_the_readers_are_found():
    # The patterns above must keep matching what the code does, or the checks below pass vacuously.
    assert {"DJANGO_SECRET_KEY", "DATABASE_URL", "ZENITH_FIELD_KEYS"} <= settings_variables()
    assert {"DJANGO_SECRET_KEY", "FLOWER_BASIC_AUTH", "ZENITH_WEB_PORT"} <= compose_variables()
    assert "ZENITH_METRICS_TOKEN" in compose_variables()


def test_env_example_lists_every_variable_settings_and_compose_read():
    missing = (settings_variables() | compose_variables()) - example_variables()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_env_example_lists_nothing_that_is_not_read():
    stale = example_variables() - settings_variables() - compose_variables()
    assert not stale, f"read by neither settings.py nor the compose files: {sorted(stale)}"


def test_readme_documents_every_variable_of_env_example():
    readme = (ROOT / "README.md").read_text()
    undocumented = sorted(name for name in example_variables() if f"`{name}`" not in readme)
    assert not undocumented, f"README's Configuration table lacks: {undocumented}"
